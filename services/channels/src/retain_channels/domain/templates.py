"""Template rendering in a Jinja2 sandbox: an unset variable is an error, never a blank."""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, UndefinedError
from jinja2.environment import Template
from jinja2.exceptions import SecurityError
from jinja2.sandbox import SandboxedEnvironment
from jinja2.utils import missing
from retain_kit.errors import InvalidArgument

VARIABLES_FIELD = "message.variables"


class MissingVariable(UndefinedError):
    def __init__(self, message: str, *, name: str, top_level: bool) -> None:
        super().__init__(message)
        self.name = name
        self.top_level = top_level


class _Strict(StrictUndefined):
    """StrictUndefined whose error says which variable was missing, so callers can name the field."""

    __slots__ = ()

    def __init__(
        self, hint: str | None = None, obj: Any = missing, name: str | None = None, exc: Any = UndefinedError
    ) -> None:
        super().__init__(hint, obj, name, exc)
        if exc is not UndefinedError:
            # The sandbox reports unsafe attribute access through here with SecurityError: keep it.
            return
        top_level = obj is missing

        def raise_missing(message: str | None = None) -> MissingVariable:
            return MissingVariable(message or "undefined", name=str(name or ""), top_level=top_level)

        self._undefined_exception = raise_missing  # type: ignore[assignment]


# Autoescape stays off: these are plain-text channels (SMS, LINE, push); an HTML email adapter escapes
# its own variables. The sandbox is what keeps operator-written templates away from Python internals.
_ENV = SandboxedEnvironment(undefined=_Strict, autoescape=False, keep_trailing_newline=True)


@lru_cache(maxsize=1024)
def _compile(source: str) -> Template:
    return _ENV.from_string(source)


def render(source: str, variables: Mapping[str, Any], *, field: str) -> str:
    """Render `source`; `field` names the template in errors (e.g. "message.body")."""
    if not source:
        return ""
    try:
        return _compile(source).render(dict(variables))
    except TemplateSyntaxError as exc:
        raise InvalidArgument(
            f"{field}: template syntax error on line {exc.lineno}: {exc.message}", field=field
        ) from exc
    except MissingVariable as exc:
        if exc.top_level:
            raise InvalidArgument(
                f"{field}: template variable {exc.name!r} is not set", field=f"{VARIABLES_FIELD}.{exc.name}"
            ) from exc
        raise InvalidArgument(f"{field}: {exc.message}", field=VARIABLES_FIELD) from exc
    except SecurityError as exc:
        raise InvalidArgument(f"{field}: not allowed in a template: {exc}", field=field) from exc
    except UndefinedError as exc:
        raise InvalidArgument(f"{field}: {exc.message}", field=VARIABLES_FIELD) from exc


def render_message(*, subject: str, body: str, variables: Mapping[str, Any]) -> tuple[str, str]:
    return (
        render(subject, variables, field="message.subject"),
        render(body, variables, field="message.body"),
    )
