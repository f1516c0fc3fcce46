"""The attacker waits for the server's /readyz with a bounded backoff (issue 18, containers).

Deterministic: the waits go to a recording ``sleep`` instead of the clock, so what is
checked is the schedule and the outcome, never how long anything took."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler

import pytest

from attacker_client.cli import main as copyattack_main
from attacker_client.readiness import MAX_DELAY, backoff_delays, wait_until_ready
from shared.errors import CopyAttackError
from shared.process import free_port
from tests.http_fixtures import http_server


@contextmanager
def late_server(not_ready_answers: int) -> Iterator[tuple[str, list[str]]]:
    """A server whose /readyz answers 503 this many times, then 200; yields its URL and
    the paths asked."""
    asked: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            status = 503 if len(asked) <= not_ready_answers else 200
            body = b'{"status": "loading"}' if status == 503 else b'{"status": "ready"}'
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    with http_server(Handler) as url:
        yield url, asked


class Recorder:
    def __init__(self) -> None:
        self.waits: list[float] = []
        self.said: list[str] = []

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)

    def say(self, message: str) -> None:
        self.said.append(message)


def test_backoff_doubles_is_capped_and_adds_up_to_the_bound() -> None:
    assert backoff_delays(0) == []
    assert backoff_delays(3.5) == [0.5, 1.0, 2.0]
    delays = backoff_delays(60)
    assert delays[:5] == [0.5, 1.0, 2.0, 4.0, 8.0]
    assert max(delays) == MAX_DELAY and sum(delays) == pytest.approx(60)
    assert backoff_delays(1.2) == [0.5, pytest.approx(0.7)]  # the last wait shortened
    with pytest.raises(ValueError):
        backoff_delays(-1)


def test_a_server_that_becomes_ready_late_is_waited_for() -> None:
    recorder = Recorder()
    with late_server(not_ready_answers=3) as (url, asked):
        attempts = asyncio.run(wait_until_ready(url, 60, sleep=recorder.sleep, say=recorder.say))
    assert attempts == 4 and asked == ["/readyz"] * 4
    assert recorder.waits == [0.5, 1.0, 2.0]
    # one line while waiting (what and why), one when ready: not a line per attempt
    assert len(recorder.said) == 2
    assert "/readyz is not ready (HTTP 503" in recorder.said[0] and "60 s" in recorder.said[0]


def test_a_ready_server_is_asked_once_and_nothing_is_said() -> None:
    recorder = Recorder()
    with late_server(not_ready_answers=0) as (url, asked):
        assert asyncio.run(wait_until_ready(url, sleep=recorder.sleep, say=recorder.say)) == 1
    assert asked == ["/readyz"] and recorder.waits == [] and recorder.said == []


def test_a_port_that_never_answers_ends_with_a_clear_error_after_the_bound() -> None:
    recorder = Recorder()
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens: connection refused
    with pytest.raises(CopyAttackError) as error:
        asyncio.run(wait_until_ready(url, 30, sleep=recorder.sleep, say=recorder.say))
    assert sum(recorder.waits) == pytest.approx(30)
    assert len(recorder.waits) == len(backoff_delays(30))
    message = str(error.value)
    assert url in message and "not ready after 30 s" in message
    assert "ConnectError" in message and "--wait-ready" in message
    assert f"(attempts: {len(recorder.waits) + 1};" in message


def test_a_port_that_accepts_and_never_answers_is_bounded_by_the_probe_timeout() -> None:
    recorder = Recorder()
    with socket.socket() as silent:  # the kernel accepts; nobody ever reads or answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        with pytest.raises(CopyAttackError, match="ReadTimeout"):
            asyncio.run(
                wait_until_ready(url, 1, probe_timeout=0.2, sleep=recorder.sleep, say=recorder.say)
            )
    assert recorder.waits == [0.5, 0.5]


def test_the_cli_refuses_a_negative_wait(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        copyattack_main(["experiment", "table2", "--server", "http://x", "--scenario", "s",
                         "--wait-ready", "-1"])  # fmt: skip
    assert "--wait-ready: must be a number of seconds" in capsys.readouterr().err


def test_table2_waits_for_a_server_that_never_becomes_ready(
    scenario_dir: object, tmp_path: object, capsys: pytest.CaptureFixture[str]
) -> None:
    """The command the compose attacker runs: a clear error, not a ConnectError trace."""
    url = f"http://127.0.0.1:{free_port()}"
    code = copyattack_main(["experiment", "table2", "--server", url, "--admin-token", "t",
                            "--scenario", str(scenario_dir), "--out", str(tmp_path),
                            "--targets", "1", "--wait-ready", "0"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2
    assert f"the recommender at {url} was not ready after 0 s (attempts: 1;" in err
