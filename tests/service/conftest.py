"""The service-layer tier: each service's batch handler on its own SQLite store, no Redis
(tests/support/service_layer.py)."""

from tests.support.service_layer import make_store, store_templates  # noqa: F401 - fixtures, used by name
