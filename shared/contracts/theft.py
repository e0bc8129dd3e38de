"""Stolen reports from law-enforcement feeds."""

from __future__ import annotations

from typing import ClassVar

from pydantic import AwareDatetime

from .base import Code, Note, Text, UnitSelection


class TheftReported(UnitSelection):
    """A law-enforcement stolen report; consecutive serials may come as one report."""

    event_type: ClassVar[str] = "theft.reported"
    agency: Code
    case_number: Code
    description: Note = ""
    reported_at: AwareDatetime | None = None
    contact: Text | None = None


class TheftRecovered(UnitSelection):
    event_type: ClassVar[str] = "theft.recovered"
    agency: Code
    case_number: Code
