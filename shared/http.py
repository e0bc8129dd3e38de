"""Helpers every read API shares: unit identity from the path, pagination, clear 400s."""

from __future__ import annotations

from typing import Annotated, Generic, TypeVar

from fastapi import HTTPException, Query
from pydantic import BaseModel

from .identity import IdentityError, normalize_manufacturer, normalize_serial

T = TypeVar("T")

Limit = Annotated[int, Query(ge=1, le=1000, description="page size")]
Offset = Annotated[int, Query(ge=0, description="rows to skip")]


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
