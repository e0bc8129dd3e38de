"""A pytest plugin (loaded by tests/conftest.py): a PostgreSQL variant that skips while
TEST_POSTGRES_URL is set is a failure, not a skip; so is a browser test (the web console's, marked
``browser``) that skips while SERIALTRACK_CI is set (.ci/run sets it after installing Chromium).

With the URL set, CI means to test PostgreSQL; a skip then hides a broken fixture or a server that
cannot be reached, and a green run would claim coverage it does not have. Without the URL, the
PostgreSQL variants skip with their reason (printed by ``-rs``), as before.
"""

from __future__ import annotations

import os

import pytest


def _postgres_variant(item: pytest.Item) -> bool:
    return item.get_closest_marker("postgres") is not None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call):
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("TEST_POSTGRES_URL") and _postgres_variant(item):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        reason = reason.removeprefix("Skipped: ")
        report.outcome = "failed"
        report.longrepr = (f"a PostgreSQL variant skipped although TEST_POSTGRES_URL is set: {reason}\n"
                           "(tests/support/skip_policy.py: with the URL set, PostgreSQL must be tested)")
    elif report.skipped and os.environ.get("SERIALTRACK_CI") and item.get_closest_marker("browser") is not None:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = (f"a browser test skipped although SERIALTRACK_CI is set: {reason.removeprefix('Skipped: ')}\n"
                           "(tests/support/skip_policy.py: CI installs Chromium, so the console is tested)")
