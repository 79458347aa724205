"""A local HTTP server that checks every request against a provider's OpenAPI document.

It plays the provider for contract tests: the real SDK talks to it over a socket, each request is
validated with openapi-core against the spec in `shared/specs/`, and a request that breaks the contract
is answered 400 (and recorded in `violations`, so the test fails even if the adapter swallowed it).
Responses are checked against the spec too, so the mock cannot drift from what the provider returns.

Usable from any service's tests: `ContractServer(spec_path, responder)`; see `twilio_responder` and
`LineResponder` for the two providers we speak to.
"""

from __future__ import annotations

import copy
import json
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import yaml
from openapi_core import Config, OpenAPI
from openapi_core.contrib.werkzeug import WerkzeugOpenAPIRequest, WerkzeugOpenAPIResponse
from werkzeug.serving import BaseWSGIServer, make_server
from werkzeug.wrappers import Request, Response

# <repo root>/../shared/specs, where the provider documents live next to the repository.
SPECS_DIR = Path(__file__).resolve().parents[4].parent / "shared" / "specs"
TWILIO_SPEC = SPECS_DIR / "twilio_api_v2010.json"
LINE_SPEC = SPECS_DIR / "messaging-api.yml"


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    query: dict[str, list[str]]

    def header(self, name: str) -> str:
        return next((v for k, v in self.headers.items() if k.lower() == name.lower()), "")

    def form(self) -> dict[str, str]:
        parsed = parse_qs(self.body.decode(), keep_blank_values=True)
        return {k: v[-1] for k, v in parsed.items()}

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True)
class Reply:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


Responder = Callable[[RecordedRequest], Reply]


def load_spec(path: Path) -> dict[str, Any]:
    text = path.read_text(encoding="utf-8")
    spec: dict[str, Any] = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    return expand_discriminators(spec)


def expand_discriminators(spec: dict[str, Any]) -> dict[str, Any]:
    """Make discriminator-only base schemas enforce their subtypes.

    LINE's `Message` declares `discriminator.mapping` without `oneOf`, which JSON Schema ignores: a
    `{"type": "text"}` without `text` would pass. Every reference to such a base (other than the
    subtypes' own `allOf` back-references) is pointed at a synthetic `anyOf` over the mapping, each
    branch pinned to its discriminator value.
    """
    spec = copy.deepcopy(spec)
    schemas: dict[str, Any] = spec.get("components", {}).get("schemas", {})
    prefix = "#/components/schemas/"
    polymorphic: dict[str, str] = {}
    for name, schema in list(schemas.items()):
        disc = schema.get("discriminator") if isinstance(schema, dict) else None
        if not disc or "mapping" not in disc or any(k in schema for k in ("oneOf", "anyOf")):
            continue
        prop = disc["propertyName"]
        branches = [
            {"allOf": [{"$ref": target}, {"type": "object", "properties": {prop: {"type": "string", "enum": [value]}}}]}
            for value, target in disc["mapping"].items()
        ]
        synthetic = f"{name}__polymorphic"
        schemas[synthetic] = {"anyOf": branches}
        polymorphic[prefix + name] = prefix + synthetic

    def rewrite(node: Any, *, in_all_of: bool = False) -> None:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref in polymorphic and not in_all_of:
                node["$ref"] = polymorphic[ref]
            for key, value in node.items():
                rewrite(value, in_all_of=key == "allOf")
        elif isinstance(node, list):
            for item in node:
                rewrite(item, in_all_of=in_all_of)

    for name, schema in schemas.items():
        if not name.endswith("__polymorphic"):
            rewrite(schema)
    rewrite(spec.get("paths", {}))
    return spec


class ContractServer:
    """A threaded WSGI server on 127.0.0.1 (free port) that validates, records and answers requests."""

    def __init__(self, spec_path: Path, responder: Responder) -> None:
        spec = load_spec(spec_path)
        self.openapi = OpenAPI.from_dict(spec, config=Config(spec_validator_cls=None))
        # The spec's own server URL: paths are matched as if the request had reached the real host.
        self.spec_host_url = spec["servers"][0]["url"].rstrip("/") + "/"
        self.responder = responder
        self.requests: list[RecordedRequest] = []
        self.violations: list[str] = []
        self._lock = threading.Lock()
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "server not started"
        return f"http://127.0.0.1:{self._server.server_port}"

    def start(self) -> ContractServer:
        self._server = make_server("127.0.0.1", 0, self._app, threaded=True)
        self._thread = threading.Thread(target=self._server.serve_forever, name="contract-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> ContractServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def take_violations(self) -> list[str]:
        with self._lock:
            taken, self.violations = self.violations, []
        return taken

    def _app(self, environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        request = Request(environ)
        body = request.get_data(cache=True)
        recorded = RecordedRequest(
            method=request.method,
            path=request.path,
            headers=dict(request.headers.items()),
            body=body,
            query={k: request.args.getlist(k) for k in request.args},
        )
        spec_request = _SpecRequest(request, self.spec_host_url)
        try:
            self.openapi.validate_request(spec_request)
        except Exception as exc:
            detail = _describe(exc)
            with self._lock:
                self.requests.append(recorded)
                self.violations.append(f"{request.method} {request.path}: {detail}")
            reply = Reply(400, {"code": 20001, "message": f"contract violation: {detail}", "status": 400})
            return self._respond(reply)(environ, start_response)
        with self._lock:
            self.requests.append(recorded)
        reply = self.responder(recorded)
        response = self._respond(reply)
        if 200 <= reply.status < 300:
            try:
                self.openapi.validate_response(spec_request, WerkzeugOpenAPIResponse(response))
            except Exception as exc:
                with self._lock:
                    self.violations.append(f"mock reply to {request.method} {request.path}: {_describe(exc)}")
        return response(environ, start_response)

    @staticmethod
    def _respond(reply: Reply) -> Response:
        payload = b"" if reply.body is None else json.dumps(reply.body, ensure_ascii=False).encode()
        return Response(payload, status=reply.status, headers=reply.headers, content_type="application/json")


class _SpecRequest(WerkzeugOpenAPIRequest):
    def __init__(self, request: Request, host_url: str) -> None:
        super().__init__(request)
        self._host_url = host_url

    @property
    def host_url(self) -> str:
        return self._host_url


def _describe(exc: BaseException) -> str:
    # openapi-core wraps the useful part (which field, which schema rule) in __cause__.schema_errors.
    causes = [str(exc) or type(exc).__name__]
    if exc.__cause__ is not None:
        causes.append(str(exc.__cause__))
        causes.extend(getattr(e, "message", str(e)) for e in getattr(exc.__cause__, "schema_errors", ()) or ())
    return "; ".join(causes)


# -- providers ------------------------------------------------------------------------------------


def _rfc2822(moment: datetime) -> str:
    return moment.strftime("%a, %d %b %Y %H:%M:%S +0000")


class TwilioResponder:
    """Answers Messages.json like Twilio: 201 with a Message resource; `fail_next` scripts errors."""

    def __init__(self) -> None:
        self.fail_next: list[Reply] = []

    def __call__(self, req: RecordedRequest) -> Reply:
        if self.fail_next:
            return self.fail_next.pop(0)
        if req.method != "POST" or not req.path.endswith("/Messages.json"):
            return Reply(404, {"code": 20404, "message": "not found", "status": 404})
        form = req.form()
        account_sid = req.path.split("/")[3]
        sid = "SM" + uuid.uuid4().hex
        now = _rfc2822(datetime.now(UTC))
        return Reply(
            201,
            {
                "account_sid": account_sid,
                "api_version": "2010-04-01",
                "body": form.get("Body", ""),
                "date_created": now,
                "date_sent": None,
                "date_updated": now,
                "direction": "outbound-api",
                "error_code": None,
                "error_message": None,
                "from": form.get("From"),
                "messaging_service_sid": form.get("MessagingServiceSid"),
                "num_media": "0",
                "num_segments": "1",
                "price": None,
                "price_unit": "USD",
                "sid": sid,
                "status": "accepted" if form.get("MessagingServiceSid") else "queued",
                "subresource_uris": {"media": f"/2010-04-01/Accounts/{account_sid}/Messages/{sid}/Media.json"},
                "to": form.get("To"),
                "uri": f"/2010-04-01/Accounts/{account_sid}/Messages/{sid}.json",
            },
        )


class LineResponder:
    """Answers like the Messaging API, including its retry-key semantics: a key seen before gets 409
    with the `X-Line-Accepted-Request-Id` of the request that was accepted."""

    def __init__(self, *, quota_limit: int | None = 1000) -> None:
        self.fail_next: list[Reply] = []
        self.quota_limit = quota_limit
        self.delivered: list[tuple[str, str]] = []
        self._accepted: dict[str, tuple[str, list[dict[str, str]]]] = {}
        self._lock = threading.Lock()

    def __call__(self, req: RecordedRequest) -> Reply:
        if self.fail_next:
            return self.fail_next.pop(0)
        if req.method == "GET" and req.path == "/v2/bot/message/quota":
            if self.quota_limit is None:
                return Reply(200, {"type": "none"})
            return Reply(200, {"type": "limited", "value": self.quota_limit})
        if req.method == "GET" and req.path == "/v2/bot/message/quota/consumption":
            return Reply(200, {"totalUsage": len(self.delivered)})
        if req.method != "POST" or req.path not in ("/v2/bot/message/push", "/v2/bot/message/multicast"):
            return Reply(404, {"message": "Not found"})
        request_id = str(uuid.uuid4())
        key = req.header("X-Line-Retry-Key")
        data = req.json()
        with self._lock:
            if key and key in self._accepted:
                accepted_id, sent = self._accepted[key]
                body: dict[str, Any] = {"message": "The retry key is already accepted"}
                if sent:
                    body["sentMessages"] = sent
                return Reply(409, body, {"x-line-request-id": request_id, "x-line-accepted-request-id": accepted_id})
            recipients = [data["to"]] if isinstance(data["to"], str) else list(data["to"])
            for to in recipients:
                for message in data["messages"]:
                    self.delivered.append((to, message.get("text", "")))
            sent = []
            if req.path.endswith("/push"):
                sent = [{"id": str(uuid.uuid4().int)[:18], "quoteToken": uuid.uuid4().hex} for _ in data["messages"]]
            if key:
                self._accepted[key] = (request_id, sent)
        if req.path.endswith("/push"):
            return Reply(200, {"sentMessages": sent}, {"x-line-request-id": request_id})
        return Reply(200, {}, {"x-line-request-id": request_id})
