"""Stream and group names. One stream per event type; one consumer group per service.

A configurable prefix keeps deployments (and test runs) that share one Redis apart.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_PREFIX = "serialtrack"


@dataclass(frozen=True, slots=True)
class Streams:
    prefix: str = DEFAULT_PREFIX

    def for_type(self, event_type: str) -> str:
        return f"{self.prefix}:{event_type}"

    def dead_letters(self, service: str) -> str:
        """Entries a service could not apply, with the reason and the original entry."""
        return f"{self.prefix}:deadletter:{service}"

    def published_ledger(self, stream: str | None = None) -> str:
        """A hash, not a stream: "<source> <id>" -> entry id of each event the CLI published.

        On a Redis Cluster (``stream`` given) one per stream, named with the stream as its hash tag:
        the CLI's publish script writes the ledger and the stream in one command, which a cluster
        runs only on keys of one slot (a key without braces hashes as its whole name, so
        ``{<stream>}:...`` lands in the stream's slot)."""
        if stream is not None:
            return f"{{{stream}}}:published-by-cli"
        return f"{self.prefix}:published-by-cli"

    def type_of(self, stream: str) -> str:
        return stream.removeprefix(f"{self.prefix}:")


def group_for(service: str) -> str:
    return service
