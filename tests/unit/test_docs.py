"""The README is the contract a newcomer reads: it must name every event type, service and command."""

from pathlib import Path

from typer.main import get_command

from serialtrack.cli import app
from services.registry import INSTALLED
from shared.contracts import EVENT_TYPES
from shared.settings import SERVICES, Settings

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_every_event_type_is_in_the_catalogue():
    missing = [t for t in EVENT_TYPES if f"| `{t}`" not in README]
    assert missing == []


def test_every_service_and_its_port_is_documented():
    for service in INSTALLED:
        assert f"| {service} | {Settings().port(service)} |" in README


def test_every_cli_command_is_documented():
    root = get_command(app)
    for name in root.list_commands(None):
        assert f"`serialtrack {name}" in README, name


def test_every_setting_is_documented():
    for field in Settings.model_fields.values():
        alias = field.validation_alias
        prefix, _, rest = alias.partition("_")
        name = f"<SERVICE>_{rest}" if prefix.lower() in SERVICES else alias
        assert f"`{name}`" in README, alias
