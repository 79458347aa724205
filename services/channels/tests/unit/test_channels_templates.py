import pytest
from retain_channels.domain.templates import render, render_message
from retain_kit.errors import InvalidArgument


def test_renders_thai_and_english_with_filters_and_loops() -> None:
    subject, body = render_message(
        subject="{{ brand }}: ของขวัญสำหรับคุณ {{ name }}",
        body="สวัสดีค่ะ คุณ{{ name }} {% for p in products %}{{ p|upper }}{% if not loop.last %}, {% endif %}{% endfor %}"
        " - {{ points }} points",
        variables={"brand": "Siam Coffee", "name": "สมหญิง", "products": ["latte", "mocha"], "points": 150},
    )
    assert subject == "Siam Coffee: ของขวัญสำหรับคุณ สมหญิง"
    assert body == "สวัสดีค่ะ คุณสมหญิง LATTE, MOCHA - 150 points"


def test_missing_variable_names_it_instead_of_rendering_blank() -> None:
    with pytest.raises(InvalidArgument) as err:
        render("Hi {{ first_name }}, your code is {{ code }}", {"code": "X1"}, field="message.body")
    assert err.value.field == "message.variables.first_name"
    assert "first_name" in err.value.message


def test_missing_nested_key_is_invalid_argument() -> None:
    with pytest.raises(InvalidArgument) as err:
        render("{{ customer.tier }}", {"customer": {"name": "A"}}, field="message.body")
    assert err.value.field == "message.variables"
    assert "tier" in err.value.message


def test_optional_variables_can_be_tested_with_is_defined() -> None:
    source = "{% if coupon is defined %}code {{ coupon }}{% else %}no code{% endif %}"
    assert render(source, {}, field="message.body") == "no code"
    assert render(source, {"coupon": "SAVE10"}, field="message.body") == "code SAVE10"


def test_sandbox_blocks_python_internals() -> None:
    with pytest.raises(InvalidArgument) as err:
        render("{{ name.__class__.__mro__ }}", {"name": "x"}, field="message.subject")
    assert err.value.field == "message.subject"
    assert "unsafe" in err.value.message


def test_syntax_error_names_the_template_field() -> None:
    with pytest.raises(InvalidArgument) as err:
        render("Hello {{ name ", {"name": "x"}, field="message.subject")
    assert err.value.field == "message.subject"


def test_values_are_not_html_escaped_on_plain_text_channels() -> None:
    assert render("{{ v }}", {"v": "A & B <3"}, field="message.body") == "A & B <3"
