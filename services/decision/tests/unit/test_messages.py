from retain_decision.domain.catalogue import default_offers
from retain_decision.domain.messages import choose_template, recipient, variables
from retain_decision.domain.offers import Template

IDS = (("email", "old@example.com"), ("email", "new@example.com"), ("phone", "0812345678"), ("phone", "+66812345678"),
       ("line_user_id", "U1234"), ("device_token", "tok-1"))


def test_recipient_per_channel_prefers_newest_identifier_and_e164() -> None:
    assert recipient("email", customer_id="cus_1", identifiers=IDS, traits={}) == "new@example.com"
    assert recipient("sms", customer_id="cus_1", identifiers=IDS, traits={}) == "+66812345678"
    assert recipient("line", customer_id="cus_1", identifiers=IDS, traits={}) == "U1234"
    assert recipient("push", customer_id="cus_1", identifiers=IDS, traits={}) == "tok-1"
    assert recipient("in_app", customer_id="cus_1", identifiers=(), traits={}) == "cus_1"


def test_recipient_falls_back_to_traits_and_reports_missing() -> None:
    assert recipient("email", customer_id="c", identifiers=(), traits={"email": "t@example.com"}) == "t@example.com"
    assert recipient("sms", customer_id="c", identifiers=(("phone", "0812345678"),), traits={}) == ""
    assert recipient("push", customer_id="c", identifiers=(), traits={"email": "x@example.com"}) == ""


def test_template_falls_back_from_region_to_language_to_english() -> None:
    templates = (
        Template("sms", "en", "", "hello"),
        Template("sms", "th", "", "สวัสดี"),
        Template("email", "ja", "", "x"),
    )
    assert choose_template(templates, channel="sms", locale="th-TH").body == "สวัสดี"  # type: ignore[union-attr]
    assert choose_template(templates, channel="sms", locale="ja").body == "hello"  # type: ignore[union-attr]
    assert choose_template(templates, channel="email", locale="th").body == "x"  # type: ignore[union-attr]
    assert choose_template(templates, channel="line", locale="th") is None


def test_variables_merge_traits_offer_and_operator_values() -> None:
    offer = default_offers()[0]
    merged = variables(offer, traits={"firstName": "Somchai", "tier": "gold"}, extra={"tier": "platinum"})
    assert merged["first_name"] == "Somchai" and merged["tier"] == "platinum"
    assert merged["offer_id"] == offer.offer_id and merged["offer_name"] == offer.name
