"""Who may call what over HTTP, and what of customers' data each caller sees.

Every read-API route declares the roles that may call it with ``allow(...)`` (a FastAPI
dependency on HTTP bearer tokens, so the OpenAPI document declares the scheme and /docs has an
"Authorize" button). ``build_app`` refuses to start a service with a route that declares none:
an endpoint cannot be added and forgotten. Only /healthz, /metrics and the API documentation
(/docs, /redoc, /openapi.json) are open.

- no token, or a token unknown, expired or revoked: 401;
- a token whose role is not allowed: 403;
- a manufacturer token asking for another manufacturer's unit, recall or list: 404, as if it did
  not exist (the path's ``manufacturer`` is checked here; recalls by id in the recalls API).

Customers' data is shaped in one place per service: each API names its customer-data fields
(``CustomerFields``: field name -> category) and its router's ``route_class`` applies
``VISIBILITY`` to every JSON response by the caller's role: clear, pseudonymized
(``anon-<hex>``, an HMAC with the installation's secret, stable across services and requests) or
hidden (null). Free text (fraud signal details) that quotes one of those values is rewritten the
same way. The README's "Who may see what" is this table.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import HTTPException, Request, Security
from fastapi.responses import Response
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import TypeAdapter

from .identity import IdentityError, normalize_manufacturer
from .pseudonyms import Pseudonyms as StoredPseudonyms
from .tokens import ADMIN, ROLES, TokenRecord, TokensError, TokenWatcher, registry_path

log = logging.getLogger("serialtrack.auth")

CUSTOMER_SERVICE, STORE, INVESTIGATOR, MANUFACTURER, AUDITOR = (
    "customer-service", "store", "investigator", "manufacturer", "auditor")
assert set(ROLES) == {ADMIN, CUSTOMER_SERVICE, STORE, INVESTIGATOR, MANUFACTURER, AUDITOR}

# Who may call what (admin may call everything). Named so that each API's routes read as policy.
UNIT_LOOKUP = (CUSTOMER_SERVICE, STORE, INVESTIGATOR, MANUFACTURER, AUDITOR)  # the four `serialtrack lookup` paths
UNIT_LISTS = (CUSTOMER_SERVICE, STORE, INVESTIGATOR, MANUFACTURER, AUDITOR)   # manufacturer: its own units only
CUSTOMER_CASES = (CUSTOMER_SERVICE, AUDITOR)                                  # claims and returns views
COUNTER = (STORE,)                                                             # POST /claims|returns/decisions
STOLEN_CHECKS = (STORE, INVESTIGATOR, CUSTOMER_SERVICE, AUDITOR)              # POST /checks (trade-in desk)
THEFT_CASES = (INVESTIGATOR, AUDITOR)                                          # alerts, exports
ANOMALIES = (INVESTIGATOR, AUDITOR)
SHIPMENTS = (STORE, INVESTIGATOR, MANUFACTURER, AUDITOR)  # manifests reconciled; manufacturer: its own only
STOCK_COUNTS = (STORE, INVESTIGATOR, AUDITOR)             # cycle counts and their reports
RECALL_CAMPAIGNS = (CUSTOMER_SERVICE, MANUFACTURER, AUDITOR)                  # manufacturer: its own recalls
ALL_ROLES = (CUSTOMER_SERVICE, STORE, INVESTIGATOR, MANUFACTURER, AUDITOR)    # who am I (the web console's sign-in)
CUSTOMER_PURCHASES = (CUSTOMER_SERVICE,)  # a customer's units by real customer id (an auditor's would undo pseudonyms)
SELL_THROUGH = (MANUFACTURER,)  # a manufacturer's own sales report (its token's manufacturer only); admin too

# Categories of customers' data and who sees them. A role not listed sees the field as null.
CLEAR, PSEUDONYM = "clear", "pseudonym"
CUSTOMER = "customer"  # customer ids, owners (warranty registrations, sales)
RECEIPT = "receipt"    # receipt ids, incl. the receipt a stolen unit was seen on
CONTACT = "contact"    # how to reach whoever reported a theft
VISIBILITY: Mapping[str, Mapping[str, str]] = {
    CUSTOMER: {ADMIN: CLEAR, CUSTOMER_SERVICE: CLEAR, AUDITOR: PSEUDONYM},
    # An investigator follows a stolen unit to the sale or sighting (receipt, till) and asks the
    # store for the rest under its own legal process: receipts yes, customer ids no.
    RECEIPT: {ADMIN: CLEAR, CUSTOMER_SERVICE: CLEAR, INVESTIGATOR: CLEAR, AUDITOR: PSEUDONYM},
    CONTACT: {ADMIN: CLEAR, INVESTIGATOR: CLEAR, AUDITOR: PSEUDONYM},
}
OPEN_PATHS = frozenset({"/healthz", "/metrics", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"})


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller, from its token."""

    name: str
    role: str
    manufacturer: str | None = None

    @property
    def source(self) -> str:
        """The envelope source of what this caller makes the service publish (counter requests)."""
        return f"http/{self.name}"

    def sees(self, category: str) -> str | None:
        return VISIBILITY[category].get(self.role)

    def sees_everything(self) -> bool:
        return all(self.sees(c) == CLEAR for c in VISIBILITY)

    def owns(self, manufacturer: str) -> bool:
        return self.manufacturer is None or self.manufacturer == manufacturer

    @classmethod
    def of(cls, record: TokenRecord) -> Principal:
        return cls(record.name, record.role, record.manufacturer)


class Pseudonyms:
    """The installation's pseudonyms (shared/pseudonyms.py) for answers: a missing key is a 503."""

    def __init__(self, directory: Path):
        self.directory = directory
        self._pseudonyms = StoredPseudonyms(directory)

    def __call__(self, value: str) -> str:
        try:
            return self._pseudonyms(value)
        except (OSError, TokensError) as exc:
            log.error("no pseudonym key in %s: %s", self.directory, exc)
            raise HTTPException(503, detail="pseudonyms are not available (see the service's log)") from None


class Auth:
    """A service's token registry and pseudonym key (``app.state.auth``)."""

    def __init__(self, directory: Path, interval: float | None = None):
        self.directory = Path(directory)
        path = registry_path(self.directory)
        self.tokens = TokenWatcher(path) if interval is None else TokenWatcher(path, interval)
        self.pseudonyms = Pseudonyms(self.directory)

    def describe(self) -> str:
        path = self.tokens.path
        if not path.exists():
            return (f"no token registry at {path}: every request but /healthz, /metrics and /docs is refused "
                    "(401); create tokens with `serialtrack tokens create`")
        return f"token registry {path}: {len(self.tokens.current())} tokens"


bearer = HTTPBearer(auto_error=False, scheme_name="token",
                    description="A serialtrack API token (`serialtrack tokens create --role ROLE`), "
                                "sent as `Authorization: Bearer st_...`.")


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail=detail, headers={"WWW-Authenticate": "Bearer"})


class Gate:
    """The dependency ``allow(...)`` returns: authenticates, authorizes, checks the manufacturer scope
    of a unit path, and leaves the caller in ``request.state.principal`` for the shaping step."""

    def __init__(self, roles: Iterable[str]):
        self.roles = frozenset(roles) | {ADMIN}
        unknown = self.roles - set(ROLES)
        if unknown:
            raise ValueError(f"unknown roles: {', '.join(sorted(unknown))}")

    def __call__(self, request: Request,
                 credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)]) -> Principal:
        auth: Auth | None = getattr(request.app.state, "auth", None)
        if auth is None:  # an app not made by build_app (tests, benches): it must set app.state.auth
            raise RuntimeError("app.state.auth is not set: no token registry to check tokens against")
        if credentials is None:
            raise _unauthorized("this endpoint needs a token: Authorization: Bearer <token> "
                                "(`serialtrack tokens create`)")
        record = auth.tokens.verify(credentials.credentials)
        if record is None:
            raise _unauthorized("the token is not valid: unknown, expired or revoked")
        caller = Principal.of(record)
        if caller.role not in self.roles:
            raise HTTPException(403, detail=f"role {caller.role} may not call {request.method} "
                                            f"{request.scope['route'].path}")
        wanted = request.path_params.get("manufacturer")
        if caller.manufacturer is not None and wanted is not None:
            try:
                wanted = normalize_manufacturer(wanted)
            except IdentityError:
                wanted = None  # the endpoint answers 400 for a malformed name, whoever asks
            if wanted is not None and wanted != caller.manufacturer:
                raise not_found()
        request.state.principal = caller
        return caller


def allow(*roles: str) -> Any:
    """``Depends`` of a route: the roles (besides admin) that may call it."""
    return Security(Gate(roles))


def not_found() -> HTTPException:
    # The same answer as for something that does not exist: a manufacturer learns nothing of another's.
    return HTTPException(404, detail="not found")


def manufacturer_filter(caller: Principal, requested: str | None) -> str | None:
    """A list's ``manufacturer`` query, normalized: a manufacturer token lists its own only, and
    asking for another's is 404."""
    if requested:
        try:
            requested = normalize_manufacturer(requested)
        except IdentityError as exc:
            raise HTTPException(400, detail=str(exc)) from None
    if caller.manufacturer is None:
        return requested or None
    if requested and requested != caller.manufacturer:
        raise not_found()
    return caller.manufacturer


def is_gated(route: APIRoute) -> bool:
    def walk(dependant) -> Iterator:
        for dep in dependant.dependencies:
            yield dep.call
            yield from walk(dep)
    return any(isinstance(call, Gate) for call in walk(route.dependant))


def api_routes(routes: Iterable) -> Iterator[APIRoute]:
    """The APIRoutes of an app or router, those of included routers too (FastAPI keeps an included
    router as one entry holding the original)."""
    for route in routes:
        original = getattr(route, "original_router", None)
        if original is not None:
            yield from api_routes(original.routes)
        elif isinstance(route, APIRoute):
            yield route


def check_every_route_is_gated(routes: Iterable) -> None:
    """Raise at start-up for a route of a read API that declares no ``allow(...)``."""
    open_routes = [r.path for r in api_routes(routes) if not is_gated(r)]
    if open_routes:
        raise RuntimeError(f"routes without allow(...) (shared/auth.py): {', '.join(open_routes)}")


# --- customers' data: one shaping step per service -----------------------------------------------------

CustomerFields = Mapping[str, str]  # JSON field name -> CUSTOMER | RECEIPT | CONTACT
FREE_TEXT = frozenset({"detail", "note", "description", "reason", "issue"})  # prose that may quote an id


class Shaper:
    """Applies VISIBILITY to JSON-like data for one caller."""

    def __init__(self, fields: CustomerFields, caller: Principal, pseudonyms: Callable[[str], str]):
        self.fields = fields
        self.caller = caller
        self.pseudonyms = pseudonyms
        self.seen: dict[str, str | None] = {}  # value -> what replaces it (for free text)

    def _replace(self, category: str, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        visibility = self.caller.sees(category)
        if visibility == CLEAR:
            return value
        replaced = self.pseudonyms(value) if visibility == PSEUDONYM else None
        self.seen[value] = replaced
        return replaced

    def fields_of(self, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: self._field(k, v) if k in self.fields else self.fields_of(v) for k, v in data.items()}
        if isinstance(data, list):
            return [self.fields_of(v) for v in data]
        return data

    def _field(self, name: str, value: Any) -> Any:
        """A customer-data field: one value, or a list of them (customers named by pending changes)."""
        if isinstance(value, list) and all(isinstance(item, str) for item in value):
            return [self._replace(self.fields[name], item) for item in value]
        if isinstance(value, (dict, list)):
            return self.fields_of(value)
        return self._replace(self.fields[name], value)

    def text_of(self, data: Any, free_text: bool = False) -> Any:
        """Free text quoting a replaced value (e.g. a fraud signal's "3 claims by C-1042 within 30
        days"). Only fields of prose (FREE_TEXT), and only values of 3 characters or more: an id
        like "7" must not rewrite every 7 of every date."""
        if not self.seen:
            return data
        if isinstance(data, dict):
            return {k: self.text_of(v, k in FREE_TEXT) for k, v in data.items()}
        if isinstance(data, list):
            return [self.text_of(v, free_text) for v in data]
        if free_text and isinstance(data, str):
            for value in sorted(self.seen, key=len, reverse=True):
                if len(value) >= 3 and value in data:
                    data = data.replace(value, self.seen[value] or "[hidden]")
        return data

    def __call__(self, data: Any) -> Any:
        return self.text_of(self.fields_of(data))


def shaper(request: Request, fields: CustomerFields) -> Shaper | None:
    """The shaping step for this request's caller; None when it sees everything as stored."""
    caller: Principal | None = getattr(request.state, "principal", None)
    if caller is None:
        raise RuntimeError("shaping a response of a route without allow(...)")
    if caller.sees_everything():
        return None
    return Shaper(fields, caller, request.app.state.auth.pseudonyms)


def shape_records(request: Request, fields: CustomerFields, records: Iterator[dict]) -> Iterator[dict]:
    """The shaping step for streamed exports, record by record."""
    shape = shaper(request, fields)
    if shape is None:
        yield from records
        return
    for record in records:
        shape.seen.clear()
        yield shape(record)


def _property_names(schema: Any) -> set[str]:
    names: set[str] = set()
    if isinstance(schema, dict):
        if isinstance(schema.get("properties"), dict):
            names.update(schema["properties"])
        for value in schema.values():
            names |= _property_names(value)
    elif isinstance(schema, list):
        for value in schema:
            names |= _property_names(value)
    return names


def customer_data_routes(fields: CustomerFields) -> type[APIRoute]:
    """A ``route_class`` for a service's router: JSON responses whose model has one of ``fields``
    go through the caller's Shaper. Responses without such fields (e.g. /checks) are untouched."""

    class CustomerDataRoute(APIRoute):
        def get_route_handler(self):
            handler = super().get_route_handler()
            model = self.response_model
            if model is None or not _property_names(TypeAdapter(model).json_schema()) & set(fields):
                return handler

            async def shaped(request: Request) -> Response:
                response = await handler(request)
                shape = shaper(request, fields)
                if shape is None or not response.media_type or "json" not in response.media_type:
                    return response
                body = json.dumps(shape(json.loads(response.body)), separators=(",", ":")).encode("utf-8")
                response.body = body
                response.headers["content-length"] = str(len(body))
                return response

            return shaped

    return CustomerDataRoute
