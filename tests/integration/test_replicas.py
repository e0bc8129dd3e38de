"""N processes per service give exactly one process's result (issue 16, docs/scaling.md).

Every service (inventory, warranty, theft, recalls) runs as real `serialtrack serve` processes on
its own PostgreSQL database, sharing its consumer group, over one Redis. The same shuffled event set
(receipts, transfers, sales, returns, resales, adjustments, police theft reports single and over a
range, recoveries, a recall with an amendment and remedies, policies, claims, return requests,
duplicates, and events published late with early times; tests/support/scale_scenario.py) is
applied with two processes per service, then with three of which one is SIGKILLed mid-run and
restarted. The final state of every unit in every service, open anomalies, alerts, decisions and
campaign counts included, must be what one process per service gives.

Why a few hundred units are enough: the races are between batches of *one unit* applied by two
processes at once. Each unit has about nine events spread over five streams, batches are small
(SERIALTRACK_BATCH_SIZE=10) and the events trickle in shuffled, so at any moment every process
holds batches naming units another process holds too; customers and stores are shared by many
units (warranty's fraud signals read across units), and the range report and the recall touch a
whole manufacturer while per-unit events of it are in flight. Without unit locks this set diverges
on every run (measured: tens of units, as in the issue); with them it never does.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import pytest
import redis
from sqlalchemy import create_engine, text

from serialtrack.redis_server import free_port
from services.registry import load
from shared.schema import migrate
from shared.store import make_engine
from shared.streams import group_for
from tests.conftest import make_settings
from tests.support.running import admin_token, publish_events, settings_env
from tests.support.scale_scenario import SERVICES, apply_in_order, outcomes, scenario

pytestmark = pytest.mark.postgres


class Fleet:
    """``n`` `serialtrack serve` processes of every service, each on its own HTTP port."""

    def __init__(self, settings, n: int, log_dir):
        self.settings, self.n, self.log_dir = settings, n, log_dir
        self.processes: dict[tuple[str, int], subprocess.Popen] = {}
        self.ports: dict[tuple[str, int], int] = {}
        self.log_offsets: dict[tuple[str, int], int] = {}

    def log(self, service: str, worker: int):
        return self.log_dir / f"{service}-{worker}.log"

    def wait_consuming(self, service: str, worker: int, timeout: float = 240) -> bool:
        """Until the process logs that its consumers run (its /healthz, which reads Redis and the
        store, may take longer than a health check waits on a crowded host). False if it exited or
        did not get there in time."""
        process, deadline = self.processes[(service, worker)], time.monotonic() + timeout
        while process.poll() is None and time.monotonic() < deadline:
            with open(self.log(service, worker), "rb") as log:
                log.seek(self.log_offsets[(service, worker)])
                if b" consuming " in log.read():
                    return True
            time.sleep(0.2)
        return False

    def start(self, service: str, worker: int) -> subprocess.Popen:
        path = self.log(service, worker)
        self.log_offsets[(service, worker)] = path.stat().st_size if path.exists() else 0
        env = settings_env(self.settings)
        port = self.ports[(service, worker)] = free_port()
        env.update({"SERIALTRACK_WORKER_ID": str(worker), f"{service.upper()}_PORT": str(port),
                    "SERIALTRACK_LINGER_MS": "0"})
        log = open(path, "ab")  # noqa: SIM115 - closed with the process
        process = subprocess.Popen([sys.executable, "-m", "serialtrack.cli", "serve", service],
                                   env=env, stdout=log, stderr=subprocess.STDOUT)
        self.processes[(service, worker)] = process
        return process

    def start_all(self) -> None:
        """Every process of every service at once, then each until it answers healthy. One that does
        not start (FastStream gives each subscriber 3 s to start consuming, which a crowded host can
        miss) is started again, as a supervisor would; one that fails twice fails the test."""
        for worker in range(self.n):
            for service in SERVICES:
                self.start(service, worker)
        for service, worker in list(self.processes):
            self.start_again_unless_consuming(service, worker)

    def start_again_unless_consuming(self, service: str, worker: int) -> None:
        if not self.wait_consuming(service, worker):
            self.kill(service, worker)
            self.start(service, worker)
            assert self.wait_consuming(service, worker), f"{service} worker {worker} did not start twice"

    def kill(self, service: str, worker: int) -> None:
        process = self.processes[(service, worker)]
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
        process.wait(10)

    def check_alive(self) -> None:
        for (service, worker), process in self.processes.items():
            if process.poll() is not None:
                log = (self.log_dir / f"{service}-{worker}.log").read_text()[-3000:]
                raise AssertionError(f"{service} worker {worker} exited with {process.returncode}:\n{log}")

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()


def drained(settings) -> bool:
    """Every stream every service reads delivered to its group and acked, every outbox empty."""
    client = redis.Redis.from_url(settings.redis_url)
    try:
        for service in SERVICES:
            for event_type in load(service).event_types:
                stream = settings.streams.for_type(event_type)
                if not client.exists(stream):
                    continue
                last = client.xinfo_stream(stream)["last-generated-id"]
                groups = {g["name"].decode(): g for g in client.xinfo_groups(stream)}
                group = groups.get(group_for(service))
                if group is None or group["pending"] or group["last-delivered-id"] != last:
                    return False
    finally:
        client.close()
    for service in SERVICES:
        engine = create_engine(settings.database_url(service).replace("postgresql://", "postgresql+psycopg://"))
        try:
            with engine.connect() as conn:
                if conn.execute(text("SELECT count(*) FROM outbox")).scalar_one():
                    return False
        except Exception:  # noqa: BLE001 - tables not there yet
            return False
        finally:
            engine.dispose()
    return True


def final_state(settings) -> dict[str, object]:
    engines = {s: create_engine(settings.database_url(s).replace("postgresql://", "postgresql+psycopg://"))
               for s in SERVICES}
    try:
        return outcomes(lambda service: engines[service].connect())
    finally:
        for engine in engines.values():
            engine.dispose()


def run_fleet(redis_handle, postgres_admin, tmp_path, name: str, n: int, kill: bool, events) -> dict:
    data_dir = tmp_path / name
    urls = {s: postgres_admin.create_database() for s in SERVICES}
    settings = make_settings(redis_handle.url, urls, data_dir, stream_prefix=f"st16{name}{os.getpid()}",
                             batch_size=20, claim_idle_ms=3000, poll_ms=20)
    admin_token(settings)
    fleet = Fleet(settings, n, data_dir)
    try:
        fleet.start_all()  # every process of a service at once, on an empty database
        third = len(events) // 3
        asyncio.run(publish_events(settings, events[:third]))
        if kill:
            time.sleep(1.5)  # let the fleet start applying, then kill a process mid-run
            fleet.check_alive()
            fleet.kill("inventory", n - 1)
            fleet.kill("warranty", 0)
        for start in range(third, len(events), 40):  # trickle in, so batches of one unit interleave
            asyncio.run(publish_events(settings, events[start:start + 40]))
        if kill:
            for service, worker in (("inventory", n - 1), ("warranty", 0)):  # the same worker ids
                fleet.start(service, worker)
                fleet.start_again_unless_consuming(service, worker)
        deadline = time.monotonic() + 480  # generous: the shared 2-core host may be crowded
        stable = 0
        while stable < 2:  # twice in a row: outgoing events may still be on their way
            assert time.monotonic() < deadline, "the fleet did not drain the events in time"
            fleet.check_alive()
            stable = stable + 1 if drained(settings) else 0
            time.sleep(0.5)
        return final_state(settings)
    finally:
        fleet.stop()
        for url in urls.values():
            postgres_admin.drop_database(url)


@pytest.fixture(scope="module")
def single_process_result(postgres_admin, tmp_path_factory):
    """The reference: the events applied by one process per service, in publishing order, on
    PostgreSQL. In process (the consumer's EventProcessor and the services' handlers, without the
    Redis transport, which decides nothing here) rather than as a fleet of four: a fleet costs a
    minute on this host, and the order test (tests/service/test_arrival_order.py) shows that the
    arrival order it would add changes nothing."""
    if postgres_admin is None:
        pytest.skip("needs PostgreSQL (TEST_POSTGRES_URL)")
    urls = {s: postgres_admin.create_database() for s in SERVICES}
    try:
        for service, url in urls.items():
            engine = make_engine(url)
            try:
                migrate(engine, load(service).migrations)
            finally:
                engine.dispose()
        return apply_in_order(tmp_path_factory.mktemp("one"), None, urls)
    finally:
        for url in urls.values():
            postgres_admin.drop_database(url)


@pytest.mark.replicas  # `pytest -m replicas` runs it alone
@pytest.mark.timeout(900)  # three fleets of 4 to 12 processes (the reference runs in the first's setup)
@pytest.mark.parametrize(("processes", "kill"), [(2, False), (3, True)], ids=["2-processes", "3-processes-one-killed"])
def test_n_processes_per_service_end_where_one_does(single_process_result, redis_handle, postgres_admin,
                                                    tmp_path, processes, kill):
    result = run_fleet(redis_handle, postgres_admin, tmp_path, f"n{processes}", processes, kill, scenario())
    reference = single_process_result
    assert reference["inventory open anomalies"], "the scenario has contradictions: the reference must show them"
    assert reference["theft open alerts"] and reference["warranty claims"] and reference["recalls progress"]
    for part, expected in reference.items():
        got = result[part]
        differing = sorted(set(got) ^ set(expected), key=repr)
        assert got == expected, f"{part}: {len(differing)} rows differ with {processes} processes, e.g. {differing[:4]}"



@pytest.mark.timeout(300)
def test_three_processes_starting_together_on_an_empty_database_migrate_it_once(redis_handle, postgres_admin,
                                                                                 tmp_path):
    """The migration runner holds an advisory lock (shared/schema.py): of three processes of a service
    started at the same moment on an empty database, one creates the schema, the others wait for it
    and find it done; all three start and serve."""
    if postgres_admin is None:
        pytest.skip("needs PostgreSQL (TEST_POSTGRES_URL)")
    url = postgres_admin.create_database()
    settings = make_settings(redis_handle.url, {"warranty": url}, tmp_path)
    admin_token(settings)
    fleet = Fleet(settings, 3, tmp_path)
    try:
        for worker in range(3):  # at once, not via start_all (which would start a failed one again)
            fleet.start("warranty", worker)
        for worker in range(3):
            assert fleet.wait_consuming("warranty", worker), fleet.log("warranty", worker).read_text()[-3000:]
        logs = [(tmp_path / f"warranty-{worker}.log").read_text() for worker in range(3)]
        assert sum("schema (none) ->" in log for log in logs) == 1, logs
        assert not any("Traceback" in log for log in logs), logs
        engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
        try:
            with engine.connect() as conn:
                versions = {r[0] for r in conn.execute(text("SELECT version_num FROM alembic_version"))}
        finally:
            engine.dispose()
    finally:
        fleet.stop()
        postgres_admin.drop_database(url)
    assert versions == set(load("warranty").migrations.script.get_heads())
