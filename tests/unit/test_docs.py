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


ROOT = Path(__file__).resolve().parents[2]


def test_the_repository_stands_on_its_own():
    """Comments and docs point inside the repository: a maintainer with a clone has everything
    (the consumer's design is in docs/consumer.md)."""
    outside = []
    for path in [*ROOT.glob("*.md"), *ROOT.glob("Makefile"), *ROOT.glob("Dockerfile"), *ROOT.glob("*.toml"),
                 *(p for d in ("serialtrack", "services", "shared", "tests", "docs", "bench", "deploy", ".ci")
                   for p in (ROOT / d).rglob("*") if p.is_file() and p.suffix in {"", ".py", ".md", ".yml", ".sql"})]:
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if "../shared" in line or "shared/notes" in line:
                outside.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    outside = [hit for hit in outside if not hit.startswith("tests/unit/test_docs.py")]
    assert outside == []


def test_every_test_the_consumer_doc_names_exists():
    doc = (ROOT / "docs" / "consumer.md").read_text()
    import re

    named = set(re.findall(r"`((?:test_|tests/)[\w/.]*?\.py)(?:::(\w+?))?(?:\*|\.\.\.)?`", doc))
    assert named, "docs/consumer.md names its tests"
    for file, _ in named:
        matches = list(ROOT.glob(f"tests/**/{Path(file).name}"))
        assert matches, f"docs/consumer.md names {file}, which does not exist"
