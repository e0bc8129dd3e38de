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
SCHEMA = ROOT / "tests" / "schemas" / "compose-spec.json"  # vendored (tests/schemas/README.md): never skipped
INFRASTRUCTURE = ("redis", "postgres", "prometheus", "grafana")
ARCHIVER = "archiver"  # not a service: archives and trims the streams (shared/retention.py)
CONSOLE = "console"  # the web console: a client of the services, not one of them
APP_SERVICES = {name: spec for name, spec in COMPOSE["services"].items()
                if name not in (*INFRASTRUCTURE, ARCHIVER, CONSOLE)}


def test_matches_the_compose_specification():
    import jsonschema

    jsonschema.validate(COMPOSE, json.loads(SCHEMA.read_text()))


def test_every_installed_service_has_a_container_and_nothing_else_does():
    assert set(APP_SERVICES) == set(INSTALLED)


def test_redis_keeps_an_append_only_file():
    command = COMPOSE["services"]["redis"]["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert "redis-data:/data" in COMPOSE["services"]["redis"]["volumes"]


def test_redis_is_bounded_and_refuses_writes_at_the_limit_instead_of_evicting():
    command = COMPOSE["services"]["redis"]["command"]
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"
    limit = command[command.index("--maxmemory") + 1]
    assert re.fullmatch(r"\$\{REDIS_MAXMEMORY:-\d+[mg]b\}", limit), limit  # a setting, with a default


def test_every_container_has_a_healthcheck_and_waits_for_healthy_dependencies():
    for name, spec in COMPOSE["services"].items():
        assert "healthcheck" in spec, name
    for name, spec in APP_SERVICES.items():
        assert spec["depends_on"] == {"redis": {"condition": "service_healthy"},
                                      "postgres": {"condition": "service_healthy"}}, name
        assert spec["build"] == "." and spec["image"] == "serialtrack:latest"


def test_one_database_per_service_and_secrets_are_required():
    init = (ROOT / "deploy" / "postgres-init.sql").read_text()
    superuser = COMPOSE["services"]["postgres"]["environment"]["POSTGRES_USER"]
    for name, spec in APP_SERVICES.items():
        url = spec["environment"][f"{name.upper()}_DATABASE_URL"]
        # Its own role owning its own database, never the superuser (tests/integration/test_postgres_roles.py
        # runs the init script for real).
        assert url.startswith(f"postgresql://{name}:${{{name.upper()}_DB_PASSWORD:?") and url.endswith(f"/{name}")
        assert superuser not in url and "postgres@" not in url and "${POSTGRES_PASSWORD" not in url
        assert f"CREATE DATABASE {name} OWNER {name};" in init
        assert re.search(rf"CREATE ROLE {name} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE\b", init)
        assert f"REVOKE ALL ON DATABASE {name} FROM PUBLIC;" in init
        assert f"${{{name.upper()}_DB_PASSWORD:?" in COMPOSE["services"]["postgres"]["environment"][
            f"{name.upper()}_DB_PASSWORD"]
    text = (ROOT / "docker-compose.yml").read_text()
    literal = re.findall(r"^\s*\w*PASSWORD:[ \t]*(?!\$\{)\S.*$", text, re.MULTILINE)
    assert literal == [], "passwords come from the environment, never from the file"


def test_no_port_is_published_on_all_interfaces():
    for name, spec in COMPOSE["services"].items():
        for port in spec.get("ports", []):
            assert isinstance(port, str) and port.startswith("127.0.0.1:") and port.count(":") == 2, (name, port)


def test_services_take_tokens_and_keys_from_secrets():
    secrets = COMPOSE["secrets"]
    for secret in ("api_tokens", "signing_keys"):
        assert (ROOT / secrets[secret]["file"]).is_dir(), secret  # a directory: revocations show through
    for name, spec in APP_SERVICES.items():
        mounted = {s["source"]: s["target"] for s in spec["secrets"]}
        assert mounted["api_tokens"] == spec["environment"]["SERIALTRACK_TOKENS_DIR"], name
        assert mounted["signing_keys"] == "/home/serialtrack/data/keys", name  # <data dir>/keys (Dockerfile)
        assert not any("TOKEN" in key and key != "SERIALTRACK_TOKENS_DIR" for key in spec["environment"]), name
    assert "SERIALTRACK_DATA_DIR=/home/serialtrack/data" in (ROOT / "Dockerfile").read_text()


@pytest.mark.parametrize("name", sorted(APP_SERVICES))
def test_container_command_is_a_real_cli_command(name):
    args = APP_SERVICES[name]["command"]
    root = get_command(app)
    subcommand = root.get_command(None, args[0])
    assert subcommand is not None, f"serialtrack has no command {args[0]!r}"
    context = subcommand.make_context(args[0], list(args[1:]))  # raises on unknown options/arguments
    assert context.params["service"] == name
    port = str(context.params["port"])
    # The container's port is published (on a host port of its own, or of a range for replicas).
    assert any(p.startswith("127.0.0.1:") and p.endswith(f":{port}") for p in APP_SERVICES[name]["ports"])
    assert f"127.0.0.1:{port}/healthz" in " ".join(APP_SERVICES[name]["healthcheck"]["test"])


def test_the_console_runs_its_cli_command_on_loopback_and_reaches_each_service_by_its_container_port():
    spec = COMPOSE["services"][CONSOLE]
    args = spec["command"]
    subcommand = get_command(app).get_command(None, args[0])
    assert subcommand is not None, f"serialtrack has no command {args[0]!r}"
    context = subcommand.make_context(args[0], list(args[1:]))
    port = context.params["port"]
    assert spec["ports"] == [f"127.0.0.1:{port}:{port}"]  # loopback only, like every other port
    assert f"127.0.0.1:{port}/healthz" in " ".join(spec["healthcheck"]["test"])
    assert spec["image"] == "serialtrack:latest"
    for name, service in APP_SERVICES.items():
        assert spec["environment"][f"{name.upper()}_URL"] == f"http://{name}:{_container_port(service)}"
        assert spec["depends_on"][name] == {"condition": "service_healthy"}
    # A client of the APIs: no database, no token registry, no signing keys, only Redis's read-only operator user.
    assert not any(key.endswith("_DATABASE_URL") or "TOKEN" in key for key in spec["environment"])
    assert "secrets" not in spec and spec["environment"]["REDIS_URL"].startswith("redis://operator-reader:")


# Monitoring: Prometheus scrapes every service container; the dashboard asks only for metrics the
# services export.

PROMETHEUS = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
GRAFANA = ROOT / "deploy" / "grafana"


def _mounted(service: str) -> dict[str, str]:
    """container path -> repository path of the service's bind mounts."""
    mounts = {}
    for volume in COMPOSE["services"][service]["volumes"]:
        source, target = volume.split(":")[:2]
        if source.startswith("./"):
            mounts[target] = source
    return mounts


def _container_port(spec: dict) -> int:
    args = spec["command"]
    return int(args[args.index("--port") + 1])


def test_prometheus_scrapes_every_service_container_on_its_port():
    mounts = _mounted("prometheus")
    config = COMPOSE["services"]["prometheus"]["command"][0].removeprefix("--config.file=")
    assert (ROOT / mounts[config]).resolve() == (ROOT / "deploy" / "prometheus.yml").resolve()
    [job] = PROMETHEUS["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    # By DNS (type A): a name resolves to every replica of the service, and each is scraped.
    targets = [f"{name}:{group['port']}" for group in job["dns_sd_configs"] for name in group["names"]]
    assert all(group["type"] == "A" for group in job["dns_sd_configs"])
    expected = {f"{name}:{_container_port(spec)}" for name, spec in APP_SERVICES.items()}
    assert sorted(targets) == sorted(expected)


def test_inventory_runs_as_two_replicas_each_with_its_own_host_port():
    """The scaled deployment (docs/scaling.md): two processes of inventory share its consumer group and
    database; a host port range gives each replica one, and no range overlaps another service's."""
    inventory = APP_SERVICES["inventory"]
    replicas = inventory["deploy"]["replicas"]
    assert replicas == 2
    [published] = inventory["ports"]
    host, port_range, container = published.rsplit(":", 2)
    first, last = map(int, port_range.split("-"))
    assert host == "127.0.0.1" and last - first + 1 == replicas and int(container) == _container_port(inventory)
    taken = {int(p.split(":")[1]) for name, spec in COMPOSE["services"].items() if name != "inventory"
             for p in spec.get("ports", [])}
    assert not taken & set(range(first, last + 1))
    # Consumer names carry the container's hostname: the replicas never share one.
    assert "hostname" not in inventory and "container_name" not in inventory


def test_grafana_provisions_the_prometheus_datasource_and_the_dashboards():
    mounts = _mounted("grafana")
    assert (ROOT / mounts["/etc/grafana/provisioning"]).resolve() == (GRAFANA / "provisioning").resolve()
    [datasource] = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())[
        "datasources"]
    prometheus_port = COMPOSE["services"]["prometheus"]["ports"][0].split(":")[-1]
    assert datasource["type"] == "prometheus" and datasource["url"] == f"http://prometheus:{prometheus_port}"
    [provider] = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "serialtrack.yml").read_text())[
        "providers"]
    dashboards_dir = (ROOT / mounts[provider["options"]["path"]]).resolve()
    assert dashboards_dir == (GRAFANA / "dashboards").resolve() and list(dashboards_dir.glob("*.json"))
    assert COMPOSE["services"]["grafana"]["depends_on"] == {"prometheus": {"condition": "service_healthy"}}
    assert "${GRAFANA_PASSWORD:?" in COMPOSE["services"]["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"]


def exported_metric_names() -> set[str]:
    """Every series name a service's /metrics can show, from the code (a ServiceMetrics' registry)."""
    from shared.metrics import ServiceMetrics

    suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"),
                "gauge": ("",)}
    names: set[str] = set()
    for family in ServiceMetrics("any").registry.collect():
        names.update(family.name + suffix for suffix in suffixes[family.type])
    return names


def _panels():
    for path in sorted((GRAFANA / "dashboards").glob("*.json")):
        dashboard = json.loads(path.read_text())
        for panel in dashboard["panels"]:
            yield path.name, panel


def test_every_dashboard_query_names_metrics_the_services_export():
    exported = exported_metric_names()
    assert "serialtrack_events_applied_total" in exported  # the derivation itself works
    uid = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())[
        "datasources"][0]["uid"]
    panels = list(_panels())
    assert panels
    for name, panel in panels:
        assert panel["targets"], (name, panel["title"])
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == uid, (name, panel["title"])
            used = set(re.findall(r"\bserialtrack_[a-z_]+", target["expr"]))
            assert used and used <= exported, (panel["title"], used - exported)


def test_the_dashboard_shows_lag_throughput_dead_letters_and_latency():
    queries = " ".join(t["expr"] for _, panel in _panels() for t in panel["targets"])
    for metric in ("serialtrack_consumer_group_lag", "serialtrack_events_applied_total",
                   "serialtrack_events_dead_lettered_total", "serialtrack_batch_apply_duration_seconds_bucket",
                   "serialtrack_event_lag_seconds_bucket"):
        assert metric in queries, metric


# Redis users: the compose Redis loads deploy/redis/users.acl.template (made from shared/acl.py) through
# deploy/redis/start.sh; each service container connects as its own reader and writer.

ACL_TEMPLATE = ROOT / "deploy" / "redis" / "users.acl.template"


def _template_users() -> dict:
    from shared.acl import parse_acl_file

    return parse_acl_file(ACL_TEMPLATE.read_text())


def _redis_user(url: str) -> tuple[str, str]:
    """(user, password variable) of a redis://user:${VAR:?...}@host URL in the compose file."""
    match = re.fullmatch(r"redis://([a-z0-9.-]+):\$\{(REDIS_[A-Z_]+_PASSWORD):\?[^}]*\}@redis:6379/0", url)
    assert match, url
    return match.group(1), match.group(2)


def test_the_acl_template_is_what_this_build_renders():
    from serialtrack.credentials import compose_template

    assert ACL_TEMPLATE.read_text() == compose_template(), \
        "regenerate it: python -m serialtrack.credentials > deploy/redis/users.acl.template"


def test_redis_loads_the_users_with_every_password_required():
    from serialtrack.credentials import password_variable

    redis = COMPOSE["services"]["redis"]
    mounts = _mounted("redis")
    assert (ROOT / mounts["/etc/serialtrack"]).resolve() == ACL_TEMPLATE.parent.resolve()
    assert redis["entrypoint"][-2:] == ["/etc/serialtrack/users.acl.template", "/data/users.acl"]
    assert (ACL_TEMPLATE.parent / "start.sh").is_file()
    assert "--requirepass" not in redis["command"]  # the default user is off instead
    users = _template_users()
    assert users["default"].on is False
    for name, user in users.items():
        if name == "default":
            continue
        variable = password_variable(name)
        assert user.secrets == (f"#${{{variable}}}",), name  # a hash of the variable, never a literal
        assert redis["environment"][variable] == f"${{{variable}:?set {variable}}}", name
    assert "--user operator-reader" in redis["healthcheck"]["test"][1]


def test_every_service_container_connects_as_its_own_reader_and_writer():
    users = _template_users()
    seen = set()
    for name, spec in APP_SERVICES.items():
        env = spec["environment"]
        (reader, reader_var), (writer, writer_var) = _redis_user(env["REDIS_URL"]), _redis_user(env["REDIS_WRITER_URL"])
        assert (reader, writer) == (f"{name}-reader", f"{name}-writer"), name
        assert reader_var == f"REDIS_{name.upper()}_READER_PASSWORD" and writer_var == f"REDIS_{name.upper()}_WRITER_PASSWORD"
        assert reader in users and writer in users
        assert "+xadd" not in users[reader].rules and "+xreadgroup" not in users[writer].rules
        seen.update((reader, writer))
    assert len(seen) == 2 * len(APP_SERVICES)  # no two containers share a user


def test_no_container_uses_admin_and_only_admin_may_do_everything():
    users = _template_users()
    assert [name for name, user in users.items() if "+@all" in user.rules] == ["admin"]
    assert all("-@all" in user.rules for name, user in users.items() if name != "admin")
    text = (ROOT / "docker-compose.yml").read_text()
    for name, spec in COMPOSE["services"].items():
        env = json.dumps(spec.get("environment", {})) + json.dumps(spec.get("healthcheck", {}))
        if name != "redis":
            assert "REDIS_ADMIN_PASSWORD" not in env and "redis://admin" not in env, name
    assert "redis://admin" not in text and "--user admin" not in text
    from shared.roles import ROLES

    assert set(ROLES) <= set(users)  # one user per producer role


def test_the_archiver_runs_the_archive_command_as_its_own_user_onto_a_volume():
    from shared.retention import STATUS_FILE

    spec = COMPOSE["services"][ARCHIVER]
    assert spec["build"] == "." and spec["image"] == "serialtrack:latest"
    args = spec["command"]
    command = get_command(app).get_command(None, args[0])
    assert args[0] == "archive" and command is not None
    context = command.make_context(args[0], list(args[1:]))  # raises on unknown options
    assert context.params["once"] is False  # a loop, not one pass
    user, variable = _redis_user(spec["environment"]["REDIS_URL"])
    assert (user, variable) == ("archiver", "REDIS_ARCHIVER_PASSWORD")
    rules = _template_users()[user].rules
    assert "+xtrim" in rules and "+xrange" in rules
    assert not {"+xadd", "+xack", "+xdel", "+xgroup|setid", "+del"} & set(rules)  # trims; never writes or acks
    archive_dir = spec["environment"]["SERIALTRACK_ARCHIVE_DIR"]
    assert f"archive-data:{archive_dir}" in spec["volumes"] and "archive-data" in COMPOSE["volumes"]
    assert f"{archive_dir}/{STATUS_FILE}" in " ".join(spec["healthcheck"]["test"])
    assert f"install -d -o serialtrack -m 700 {archive_dir}" in (ROOT / "Dockerfile").read_text()
    assert spec["depends_on"] == {"redis": {"condition": "service_healthy"}}
