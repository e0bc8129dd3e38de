"""The body cap against the theft service as its own OS process (`serialtrack serve theft`, as
production runs it): a careless client's 48 MiB `POST /checks` (a million serials) is answered
413 at once, without the service reading it, and other reads on the service stay fast meanwhile.
Before the cap, that body stalled the service for ~25 s and its 422 echoed 45 MiB back."""

from __future__ import annotations

import json
import socket
import threading
import time
from urllib.parse import urlsplit

import httpx

from tests.support.running import admin_token, start_service_process, wait_healthy

MIB = 1024 * 1024


def careless_post(url: str, token: str, body: bytes, chunked: bool) -> tuple[int, bytes, float]:
    """POST /checks over a plain socket, as a client that sends its whole body without waiting:
    the status line, what came back, and the seconds until the answer began."""
    parts = urlsplit(url)
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {len(body)}"
    head = (f"POST /checks HTTP/1.1\r\nHost: {parts.netloc}\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: application/json\r\n{framing}\r\n\r\n").encode()
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        started = time.monotonic()
        sock.sendall(head)

        def send_body():
            try:
                for start in range(0, len(body), MIB):
                    piece = body[start:start + MIB]
                    sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
                if chunked:
                    sock.sendall(b"0\r\n\r\n")
            except OSError:
                pass  # the service answered and closed: the rest of the body is not wanted

        sender = threading.Thread(target=send_body, daemon=True)
        sender.start()
        answer = sock.recv(65536)
        answered_after = time.monotonic() - started
        try:
            while not _complete(answer):
                more = sock.recv(65536)
                if not more:
                    break
                answer += more
        except ConnectionResetError:
            pass  # closed with the body unread: what came before the reset is the answer
    return int(answer.split(b" ", 2)[1]), answer, answered_after


def _complete(answer: bytes) -> bool:
    head, found, rest = answer.partition(b"\r\n\r\n")
    if not found:
        return False
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(rest) >= int(value)
    return True


def test_an_oversized_checks_body_is_413_at_once_and_reads_stay_fast(sqlite_settings, tmp_path):
    settings = sqlite_settings
    token = admin_token(settings)
    process = start_service_process("theft", settings, tmp_path / "theft.log")
    try:
        wait_healthy(settings, "theft", process, timeout=60)
        url = settings.service_url("theft")
        headers = {"Authorization": f"Bearer {token}"}
        item = json.dumps({"manufacturer": "acme", "serial": "S0000001"}).encode()
        body_bytes = b'{"items":[' + b",".join([item] * 1_000_000) + b"]}"  # a million serials, 42 MiB
        assert len(body_bytes) > 40 * MIB

        # Careless clients keep sending (each body whole, by Content-Length and chunked) while a
        # trade-in desk reads: every answer is a 413 at once, and every read is answered meanwhile.
        results: list[tuple[int, bytes, float]] = []

        def careless_clients():
            for chunked in (False, True, False, True, False):
                results.append(careless_post(url, token, body_bytes, chunked))

        sending = threading.Thread(target=careless_clients, daemon=True)
        read_times: list[float] = []
        with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
            assert client.get("/stolen/acme/S0000001").status_code == 200  # connected before the load
            sending.start()
            while sending.is_alive() or len(read_times) < 20:
                started = time.monotonic()
                assert client.get("/stolen/acme/S0000001").status_code == 200
                read_times.append(time.monotonic() - started)
        sending.join(60)
        assert len(results) == 5
        for status, answer, answered_after in results:
            assert status == 413, answer[:300]
            assert b"2 MiB" in answer and len(answer) < 1000  # nothing of the body comes back
            assert answered_after < 5, f"413 after {answered_after:.1f} s"  # 25 s before the cap
        assert max(read_times) < 3, f"a read took {max(read_times):.1f} s meanwhile"

        # A check within the cap still works on the same service.
        small = httpx.post(f"{url}/checks", headers=headers, json={"items": [{"manufacturer": "acme", "serial": "S1"}]},
                           timeout=10)
        assert small.status_code == 200 and small.json()["checked"] == 1
    finally:
        process.terminate()
        process.wait(30)
