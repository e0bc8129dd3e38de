"""Unit identity: who a unit is, and how its names are normalized.

A unit is identified by (manufacturer, serial). Serials are unique only within
a manufacturer (GS1 SGTIN logic), so the same serial string from two
manufacturers is two units.

Normalization, applied everywhere a manufacturer or serial enters the system:

- manufacturer: surrounding whitespace stripped, lower-cased, inner runs of
  whitespace become one "-"; then 1..64 characters of ``a-z 0-9 . _ -``,
  starting with a letter or digit ("Acme Corp" -> "acme-corp").
- both: ASCII only. A non-ASCII character is refused before any case mapping,
  which would otherwise turn some of them into ASCII letters ("\ufb01x1" into
  "FIX1", "\u017fn-9" into "SN-9").
- serial: surrounding whitespace stripped, upper-cased (scanners and people
  disagree on case; the unit does not); then 1..64 characters of
  ``A-Z 0-9 . _ -``, starting with a letter or digit. Inner whitespace, "/",
  control characters and anything else are rejected, never silently removed:
  a serial that needs repair is a data error the publisher must see.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import lru_cache
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    model_validator,
)

MAX_NAME_LENGTH = 64
MAX_RANGE_SIZE = 10_000_000

_MANUFACTURER_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_SERIAL_RE = re.compile(r"[A-Z0-9][A-Z0-9._-]{0,63}")
_PREFIX_RE = re.compile(r"[A-Z0-9._-]{0,63}")


class IdentityError(ValueError):
    """A manufacturer or serial that cannot be normalized."""


_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_WHITESPACE_RE = re.compile(r"\s+")


def _check_text(kind: str, value: object) -> str:
    if not isinstance(value, str):
        raise IdentityError(f"{kind} must be a string, got {type(value).__name__}")
    if not value.isascii():
        # Checked before case mapping: str.upper() and str.lower() map some non-ASCII letters to
        # ASCII ("\ufb01x1" -> "FIX1", "\u017fn-9" -> "SN-9"), a silent repair of what was sent.
        raise IdentityError(f"{kind} {value!r} contains non-ASCII characters; only ASCII is accepted")
    text = value.strip()
    if _CONTROL_RE.search(text):
        raise IdentityError(f"{kind} {value!r} contains control characters")
    return text


def normalize_manufacturer(value: object) -> str:
    if not isinstance(value, str):
        raise IdentityError(f"manufacturer must be a string, got {type(value).__name__}")
    return _normalize_manufacturer_text(value)


@lru_cache(maxsize=4096)  # a few manufacturers, millions of events
def _normalize_manufacturer_text(value: str) -> str:
    text = _WHITESPACE_RE.sub("-", _check_text("manufacturer", value).lower())
    if not _MANUFACTURER_RE.fullmatch(text):
        raise IdentityError(
            f"manufacturer {value!r} is not valid: use 1-{MAX_NAME_LENGTH} characters of "
            "a-z, 0-9, '.', '_', '-' starting with a letter or digit (e.g. 'acme-corp')"
        )
    return text


def normalize_serial(value: object) -> str:
    if type(value) is str and _SERIAL_RE.fullmatch(value):
        return value  # already normalized (the usual case): nothing to strip, upper-case or refuse
    text = _check_text("serial", value).upper()
    if not _SERIAL_RE.fullmatch(text):
        raise IdentityError(
            f"serial {value!r} is not valid: use 1-{MAX_NAME_LENGTH} characters of "
            "A-Z, 0-9, '.', '_', '-' starting with a letter or digit, no spaces or '/'"
        )
    return text


def unit_subject(manufacturer: str, serial: str) -> str:
    """The envelope ``subject`` of a single-unit event: ``<manufacturer>/<serial>``."""
    return f"{manufacturer}/{serial}"


def _pydantic(fn):  # identity errors become pydantic validation errors with our message
    def wrapper(value: object) -> str:
        try:
            return fn(value)
        except IdentityError as exc:
            raise ValueError(str(exc)) from None

    return wrapper


Manufacturer = Annotated[str, BeforeValidator(_pydantic(normalize_manufacturer))]
Serial = Annotated[str, BeforeValidator(_pydantic(normalize_serial))]


def _normalize_prefix(value: object) -> str:
    text = _check_text("serial prefix", value).upper()
    if not _PREFIX_RE.fullmatch(text):
        raise ValueError(f"serial prefix {value!r} may only use A-Z, 0-9, '.', '_', '-'")
    return text


class SerialRange(BaseModel):
    """Consecutive serials ``prefix + number``, e.g. prefix "SN", first 1, last 500, width 6
    gives SN000001 .. SN000500. Without ``width`` numbers are written without padding.

    Stored and matched as a range, never expanded unless a consumer needs the rows.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    prefix: Annotated[str, AfterValidator(_normalize_prefix)] = ""
    first: int = Field(ge=0, lt=10**18)  # 18 digits: stored as 64-bit integers
    last: int = Field(ge=0, lt=10**18)
    width: int | None = Field(default=None, ge=1, le=32)

    @model_validator(mode="after")
    def _check_bounds(self) -> SerialRange:
        if self.last < self.first:
            raise ValueError(f"serial range last ({self.last}) is below first ({self.first})")
        if self.count > MAX_RANGE_SIZE:
            raise ValueError(f"serial range has {self.count} serials; at most {MAX_RANGE_SIZE} per range")
        if self.width is not None and len(str(self.last)) > self.width:
            raise ValueError(f"serial range last ({self.last}) does not fit width {self.width}")
        if len(self.prefix) + max(self.width or 0, len(str(self.last))) > MAX_NAME_LENGTH:
            raise ValueError(f"serials of this range would exceed {MAX_NAME_LENGTH} characters")
        return self

    @property
    def count(self) -> int:
        return self.last - self.first + 1

    def __iter__(self) -> Iterator[str]:  # type: ignore[override]  # its serials, not BaseModel's (field, value) pairs
        prefix, width = self.prefix, self.width
        if width is None:
            return (f"{prefix}{n}" for n in range(self.first, self.last + 1))
        return (f"{prefix}{n:0{width}d}" for n in range(self.first, self.last + 1))

    def __contains__(self, serial: object) -> bool:
        if not isinstance(serial, str) or not serial.startswith(self.prefix):
            return False
        digits = serial[len(self.prefix):]
        if not digits.isdigit() or not digits.isascii():
            return False
        if self.width is None:
            if len(digits) > 1 and digits[0] == "0":
                return False  # unpadded ranges never produce leading zeros
        elif len(digits) != self.width:
            return False
        return self.first <= int(digits) <= self.last

    def describe(self) -> str:
        if self.width is None:
            return f"{self.prefix}{self.first}..{self.prefix}{self.last}"
        return f"{self.prefix}{self.first:0{self.width}d}..{self.prefix}{self.last:0{self.width}d}"
