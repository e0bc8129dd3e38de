"""The services this build ships, in start order. `serialtrack up` starts each of them."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the CLI reads INSTALLED on every start; the service machinery loads only with a service
    from shared.service import ServiceDefinition

INSTALLED = ("inventory", "warranty", "theft", "recalls")


def load(name: str) -> ServiceDefinition:
    if name not in INSTALLED:
        raise KeyError(f"unknown service {name!r}; this build has: {', '.join(INSTALLED)}")
    return importlib.import_module(f"services.{name}.app").definition
