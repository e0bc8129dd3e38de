"""The HTTP edge every read API shares: bounded requests, documented errors, unit identity from the
path, pagination and time filters (README: "HTTP limits and errors").

- A request body over MAX_BODY_BYTES is refused with 413 before anything parses it
  (``BodyLimit``): at once when ``Content-Length`` says so, else as soon as the streamed bytes pass
  the cap. A client cannot make a service read, parse or echo megabytes.
- A 422 has FastAPI's documented shape (``HTTPValidationError``), but never echoes a large input
  back and lists at most MAX_LISTED_ERRORS errors (``validation_error_handler``).
- Pagination, time filters, identity and id parameters carry their bounds and patterns in the
  OpenAPI document, and a value outside them is a 422 (or 400 for an identity the rules refuse),
  never a 500.
- Every route declares the errors it can answer with their body (``ErrorOut``).
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Annotated, Any, Generic, TypeVar

from fastapi import FastAPI, HTTPException, Path, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, BeforeValidator, ValidationError

from .identity import MAX_NAME_LENGTH, IdentityError, normalize_manufacturer, normalize_serial
from .time_window import EARLIEST_QUERY_TIME, LATEST_QUERY_TIME, query_time_problem

T = TypeVar("T")

MAX_BODY_BYTES = 2 * 1024 * 1024  # 2 MiB: a 10,000-item POST /checks is 0.4-1.5 MiB (names of 8-64 characters)
MAX_OFFSET = 1_000_000_000  # past every real table, inside every store's 64-bit integers
MAX_LIMIT = 1000
MAX_ECHOED_INPUT = 200  # characters of JSON: a 422 may quote a bad value, never a bad body
MAX_LISTED_ERRORS = 20


class ErrorOut(BaseModel):
    """The body of every 4xx and 5xx but 422: ``{"detail": "what was wrong, in a sentence"}``."""

    detail: str


def errors(described: dict[int, str]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for error statuses, each with the ErrorOut body: ``errors({404: "unknown
    unit"})``."""
    return {code: {"model": ErrorOut, "description": text} for code, text in described.items()}


# Any request may carry a body: every route, /healthz and /metrics too, may answer 413.
BODY_TOO_LARGE = errors({413: f"the request body is larger than {MAX_BODY_BYTES // (1024 * 1024)} MiB"})
# Every route of a read API: all are gated (shared/auth.py).
COMMON_ERRORS = {**errors({401: "no token, or a token unknown, expired or revoked",
                           403: "the token's role may not call this endpoint"}), **BODY_TOO_LARGE}
# Routers whose answers carry customers' data shaped by role (shared/auth.py customer_data_routes).
SHAPED_ERRORS = {**COMMON_ERRORS, **errors({503: "pseudonyms are not available (no key in the tokens dir)"})}


# --- request bodies ---------------------------------------------------------------------------------

class BodyTooLarge(HTTPException):
    def __init__(self, limit: int):
        super().__init__(413, detail=f"the request body is larger than {limit:,} bytes "
                                     f"({limit // (1024 * 1024)} MiB), the limit of this API: send less per call")


class BodyLimit:
    """ASGI middleware: a body over ``limit`` bytes is answered 413 before it is parsed. A declared
    ``Content-Length`` over the limit is refused without calling the app; a streamed (chunked) body
    is counted as it arrives and refused when it passes the limit. FastAPI re-raises an
    HTTPException met while reading the body, so the route answers the 413 (JSON, ErrorOut); the
    middleware answers it itself when the body is read elsewhere."""

    def __init__(self, app, limit: int = MAX_BODY_BYTES):
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.limit:
            await _send_error(send, BodyTooLarge(self.limit))
            return
        received = 0
        started = False

        async def counted_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise BodyTooLarge(self.limit)
            return message

        async def noted_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, noted_send)
        except BodyTooLarge as exc:
            if started:
                raise
            await _send_error(send, exc)


def _content_length(scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server refuses a malformed Content-Length before we see it
    return None


async def _send_error(send, exc: HTTPException) -> None:
    body = json.dumps({"detail": exc.detail}).encode("utf-8")
    # Connection: close: the unread rest of the body is not worth reading to keep the connection.
    await send({"type": "http.response.start", "status": exc.status_code,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


# --- 422 --------------------------------------------------------------------------------------------

def _small(value: Any) -> Any | None:
    """``value`` as JSON if it is short enough to quote back, else None."""
    try:
        encoded = jsonable_encoder(value)
        text = json.dumps(encoded)
    except (TypeError, ValueError):
        return None
    return encoded if len(text) <= MAX_ECHOED_INPUT else None


def _error_out(error: dict) -> dict:
    out: dict[str, Any] = {"type": str(error.get("type", "value_error")),
                           "loc": [part if isinstance(part, (str, int)) else str(part) for part in error.get("loc", ())],
                           "msg": str(error.get("msg", ""))[:500]}
    if "input" in error:
        echoed = _small(error["input"])
        if echoed is not None:
            out["input"] = echoed
    ctx = error.get("ctx")
    if isinstance(ctx, dict):
        out["ctx"] = {str(k): v if isinstance(v, (int, float, bool)) or v is None else str(v)[:200]
                      for k, v in ctx.items()}
    return out


def validation_errors(errors_: list[dict]) -> list[dict]:
    """Errors in the ``HTTPValidationError`` shape, large inputs left out, the list cut short."""
    listed = [_error_out(e) for e in errors_[:MAX_LISTED_ERRORS]]
    if len(errors_) > MAX_LISTED_ERRORS:
        listed.append({"type": "too_many_errors", "loc": [],
                       "msg": f"{len(errors_) - MAX_LISTED_ERRORS} more errors not listed"})
    return listed


async def validation_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return JSONResponse({"detail": validation_errors(list(exc.errors()))}, status_code=422)


def invalid_body(exc: ValidationError, prefix: tuple[str | int, ...] = ("body",)) -> RequestValidationError:
    """A pydantic error met after FastAPI's own validation (a contract applied to a body), as the
    422 FastAPI would have answered."""
    return RequestValidationError([{**e, "loc": (*prefix, *e["loc"])} for e in exc.errors()])


def install(app: FastAPI) -> None:
    """The edge on a service's app: the body cap and the 422 shape."""
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_middleware(BodyLimit)


# --- parameters -------------------------------------------------------------------------------------

# The identity rules (shared/identity.py) as the API documents them: case does not matter, the
# service normalizes (README: "Units and their identity"). Anything else is a 400 naming the rule.
NAME_PATTERN = rf"^[A-Za-z0-9][A-Za-z0-9._-]{{0,{MAX_NAME_LENGTH - 1}}}$"
ManufacturerPath = Annotated[str, Path(
    description="manufacturer: 1-64 of a-z 0-9 . _ - starting with a letter or digit (case-insensitive)",
    json_schema_extra={"pattern": NAME_PATTERN}, examples=["acme"])]
SerialPath = Annotated[str, Path(
    description="serial: 1-64 of A-Z 0-9 . _ - starting with a letter or digit (case-insensitive)",
    json_schema_extra={"pattern": NAME_PATTERN}, examples=["SN000001"])]
ManufacturerFilter = Annotated[str | None, Query(
    description="only this manufacturer's (1-64 of a-z 0-9 . _ -, case-insensitive)",
    json_schema_extra={"pattern": NAME_PATTERN})]

# Ids and free filters have the shape of the contracts' ``Code``: 1-64 characters, no control
# characters (which PostgreSQL refuses in text), no "/" for ids in a path.
CODE_PATTERN = r"^[^\x00-\x1f\x7f]{1,64}$"
ID_PATTERN = r"^[^\x00-\x1f\x7f/]{1,64}$"
Filter = Annotated[str | None, Query(max_length=64, pattern=CODE_PATTERN, description="exact match")]


def id_path(what: str) -> Any:
    return Path(pattern=ID_PATTERN, max_length=64, description=f"the {what}: 1-64 characters, no '/' or control "
                                                               "characters")


Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description=f"page size, 1..{MAX_LIMIT}")]
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description=f"rows to skip, 0..{MAX_OFFSET:,}")]

_ISO_START = re.compile(r"\d{4}-\d{2}-\d{2}")


def _query_time(value: object) -> datetime | None:
    """An ISO 8601 date or time inside the documented range, as an aware UTC datetime; no zone
    means UTC. Numbers are refused: ``until=0.5`` is a typo, not 0.5 seconds after 1970."""
    if value is None:
        return None
    if isinstance(value, datetime):
        time = value
    else:
        text = value.strip() if isinstance(value, str) else ""
        try:
            if not _ISO_START.match(text):
                raise ValueError
            time = datetime.fromisoformat(text.upper())
        except ValueError:
            raise ValueError("use an ISO 8601 date or time, e.g. 2026-11-01 or 2026-11-01T09:00:00Z") from None
    if time.tzinfo is None:
        time = time.replace(tzinfo=UTC)
    problem = query_time_problem(time)  # before astimezone, which overflows past year 9999
    if problem:
        raise ValueError(problem)
    return time.astimezone(UTC)


QUERY_TIME_RANGE = f"{EARLIEST_QUERY_TIME.date().isoformat()}..{LATEST_QUERY_TIME.date().isoformat()}"
QueryTime = Annotated[datetime | None, BeforeValidator(_query_time)]


# The range as a pattern on the year, so that the OpenAPI document itself says it.
_YEARS_PATTERN = r"^(19[7-9][0-9]|2[01][0-9][0-9])-"
assert (EARLIEST_QUERY_TIME.year, LATEST_QUERY_TIME.year) == (1970, 2200)


def time_query(what: str) -> Any:
    return Query(description=f"{what} (ISO 8601 date or time, no zone = UTC; {QUERY_TIME_RANGE}, else 422)",
                 json_schema_extra={"pattern": _YEARS_PATTERN})


class Page(BaseModel, Generic[T]):
    total: int
    limit: int
    offset: int
    items: list[T]


def unit_key_or_400(manufacturer: str, serial: str) -> tuple[str, str]:
    try:
        return normalize_manufacturer(manufacturer), normalize_serial(serial)
    except IdentityError as exc:
        raise HTTPException(status_code=400, detail=str(exc)) from None


def manufacturer_or_400(manufacturer: str) -> str:
    try:
        return normalize_manufacturer(manufacturer)
    except IdentityError as exc:
        raise HTTPException(status_code=400, detail=str(exc)) from None
