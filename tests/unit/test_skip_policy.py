"""The run fails when PostgreSQL variants skip while TEST_POSTGRES_URL is set (tests/support/skip_policy.py)."""

from __future__ import annotations

import pytest

SUITE = """
import pytest

@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store(request):
    if request.param == "postgresql":
        pytest.skip("no PostgreSQL here")
    return request.param

def test_store(store):
    assert store

@pytest.mark.skip(reason="not about PostgreSQL")
def test_other():
    pass
"""


@pytest.fixture
def suite(pytester):
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\nmarkers =\n    postgres: needs PostgreSQL\n")
    pytester.makepyfile(SUITE)
    return pytester


def test_with_the_url_set_a_skipped_postgresql_variant_fails_the_run(suite, monkeypatch):
    monkeypatch.setenv("TEST_POSTGRES_URL", "postgresql://nowhere/postgres")
    result = suite.runpytest("-p", "tests.support.skip_policy", "-rs")
    result.assert_outcomes(passed=1, errors=1, skipped=1)  # an error in setup; the other skip stays a skip
    result.stdout.fnmatch_lines(["*skipped although TEST_POSTGRES_URL is set: no PostgreSQL here*"])
    assert result.ret != 0


def test_without_the_url_it_skips_with_its_reason(suite, monkeypatch):
    monkeypatch.delenv("TEST_POSTGRES_URL", raising=False)
    result = suite.runpytest("-p", "tests.support.skip_policy", "-rs")
    result.assert_outcomes(passed=1, skipped=2)
    result.stdout.fnmatch_lines(["SKIPPED*no PostgreSQL here*"])
    assert result.ret == 0


BROWSER_SUITE = """
import pytest

@pytest.mark.browser
def test_console():
    pytest.skip("no chromium here")
"""


def test_in_ci_a_skipped_browser_test_fails_the_run_and_elsewhere_it_skips(pytester, monkeypatch):
    pytester.makeini("[pytest]\nmarkers =\n    browser: drives Chromium\n")
    pytester.makepyfile(BROWSER_SUITE)
    monkeypatch.setenv("SERIALTRACK_CI", "1")
    result = pytester.runpytest("-p", "tests.support.skip_policy")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*browser test skipped although SERIALTRACK_CI is set: no chromium here*"])
    monkeypatch.delenv("SERIALTRACK_CI")
    pytester.runpytest("-p", "tests.support.skip_policy").assert_outcomes(skipped=1)
