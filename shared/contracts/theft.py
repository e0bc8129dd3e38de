"""Stolen reports from law-enforcement feeds, and the alerts the theft-watch service raises."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from ..identity import Manufacturer, Serial
from .base import Code, EventData, Note, Text, UnitSelection


class TheftReported(UnitSelection):
    """A law-enforcement stolen report; consecutive serials may come as one report."""

    event_type: ClassVar[str] = "theft.reported"
    agency: Code
    case_number: Code
    description: Note = ""
    reported_at: AwareDatetime | None = None
    contact: Text | None = None


class TheftRecovered(UnitSelection):
    """An agency closed its stolen report: the units were recovered."""

    event_type: ClassVar[str] = "theft.recovered"
    agency: Code
    case_number: Code


class AlertSighting(BaseModel):
    """Where, when and by whom a unit was seen: one event that named it."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    event_type: str = Field(max_length=64)
    event_source: str = Field(max_length=256)
    event_id: str = Field(max_length=128)
    seen_at: AwareDatetime
    location: Code | None = None
    terminal_id: Code | None = None
    reference: Code | None = None  # receipt, claim or request id the sighting carried


AlertKind = Literal["sighting", "retroactive", "possible_match"]
AlertPriority = Literal["high", "low"]
ReportOrigin = Literal["agency", "retailer"]
NearReason = Literal["homoglyph", "dropped_character", "extra_character", "swapped_characters", "changed_character"]


class NearSerial(BaseModel):
    """A stolen serial a possible_match alert's unit resembles, and how (docs/theft.md, "Near misses")."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    serial: Serial
    reason: NearReason


class TheftAlertRaised(EventData):
    """A unit with an open stolen (or retailer lost/stolen) report surfaced.

    ``kind`` "sighting": ``sightings`` holds the one event that named the unit while the case was
    open. ``kind`` "retroactive": the report came after the unit had been seen; ``sightings`` holds
    the last sightings before the report, newest first. ``kind`` "possible_match" (``priority``
    "low"): the unit sold, returned or claimed is not reported, but its serial nearly matches the
    reported serials in ``near_matches`` (a misread or mistyped serial, or a near-copy). One alert per
    (sighting, unit, case), or per (unit, case) when retroactive; the envelope id is the alert id,
    derived from those, so redelivery and refolds never raise it twice.
    """

    event_type: ClassVar[str] = "theft.alert"
    published_by: ClassVar[str | None] = "theft"
    alert_id: Code
    kind: AlertKind
    manufacturer: Manufacturer
    serial: Serial
    origin: ReportOrigin = "agency"
    agency: Code
    case_number: Code
    seen_at: AwareDatetime
    sightings: list[AlertSighting] = Field(min_length=1, max_length=20)
    priority: AlertPriority = "high"  # "low" for possible_match: an exact alert comes first
    near_matches: list[NearSerial] = Field(default=[], max_length=20)


class TheftAlertWithdrawn(EventData):
    """An alert turned out wrong only because of arrival order: a late ``theft.recovered`` (or a
    retailer's ``found``) showed the case was closed when the unit was seen."""

    event_type: ClassVar[str] = "theft.alert.withdrawn"
    published_by: ClassVar[str | None] = "theft"
    alert_id: Code
    manufacturer: Manufacturer
    serial: Serial
    agency: Code
    case_number: Code
    reason: Text
