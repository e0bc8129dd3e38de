"""docker-compose.yml cannot be run here (no Docker engine): check its structure instead, and that
every service container runs a real command of this project's CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from typer.main import get_command

from serialtrack.cli import app
from services.registry import INSTALLED

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SCHEMA = ROOT.parent / "shared" / "data" / "compose-spec.json"
APP_SERVICES = {name: spec for name, spec in COMPOSE["services"].items() if name not in ("redis", "postgres")}


def test_matches_the_compose_specification():
    if not SCHEMA.is_file():
        pytest.skip(f"compose schema not found at {SCHEMA}")
    import jsonschema

    jsonschema.validate(COMPOSE, json.loads(SCHEMA.read_text()))


def test_every_installed_service_has_a_container_and_nothing_else_does():
    assert set(APP_SERVICES) == set(INSTALLED)


def test_redis_keeps_an_append_only_file():
    command = COMPOSE["services"]["redis"]["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert "redis-data:/data" in COMPOSE["services"]["redis"]["volumes"]


def test_every_container_has_a_healthcheck_and_waits_for_healthy_dependencies():
    for name, spec in COMPOSE["services"].items():
        assert "healthcheck" in spec, name
    for name, spec in APP_SERVICES.items():
        assert spec["depends_on"] == {"redis": {"condition": "service_healthy"},
                                      "postgres": {"condition": "service_healthy"}}, name
        assert spec["build"] == "." and spec["image"] == "serialtrack:latest"


def test_one_database_per_service_and_secrets_are_required():
    init = (ROOT / "deploy" / "postgres-init.sql").read_text()
    for name, spec in APP_SERVICES.items():
        url = spec["environment"][f"{name.upper()}_DATABASE_URL"]
        assert url.endswith(f"/{name}") and f"CREATE DATABASE {name};" in init
        assert "${POSTGRES_PASSWORD:?" in url and "${REDIS_PASSWORD:?" in spec["environment"]["REDIS_URL"]
    text = (ROOT / "docker-compose.yml").read_text()
    literal = re.findall(r"^\s*\w*PASSWORD:[ \t]*(?!\$\{)\S.*$", text, re.MULTILINE)
    assert literal == [], "passwords come from the environment, never from the file"


@pytest.mark.parametrize("name", sorted(APP_SERVICES))
def test_container_command_is_a_real_cli_command(name):
    args = APP_SERVICES[name]["command"]
    root = get_command(app)
    subcommand = root.get_command(None, args[0])
    assert subcommand is not None, f"serialtrack has no command {args[0]!r}"
    context = subcommand.make_context(args[0], list(args[1:]))  # raises on unknown options/arguments
    assert context.params["service"] == name
    port = str(context.params["port"])
    assert f"{port}:{port}" in APP_SERVICES[name]["ports"]
    assert f"127.0.0.1:{port}/healthz" in " ".join(APP_SERVICES[name]["healthcheck"]["test"])
