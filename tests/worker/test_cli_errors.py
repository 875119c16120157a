"""Every command fails on one line, exit 2, when its store or broker is away or a key is unknown."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from tests.servers import RedisServer
from tests.worker.test_cli import datasync

PASSWORD = "topsecret-pw"
STORE_COMMANDS = [
    ["sync", "ethnic_category"],
    ["status"],
    ["migrate"],
    ["history", "ethnic_category"],
    ["diff", "ethnic_category"],
    ["accept", "ethnic_category"],
    ["reject", "ethnic_category"],
    ["rollback", "ethnic_category", "--to", "1"],
    ["release", "ethnic_category"],
    ["prune"],
    ["run"],
]
BROKER_COMMANDS = [["resync", "ethnic_category", "--wait"], ["resync", "--all"], ["worker"], ["beat"], ["run"]]
REVIEW_COMMANDS = [
    ["history"],
    ["diff"],
    ["diff", "--held"],
    ["accept"],
    ["reject"],
    ["rollback", "--to", "1"],
    ["release"],
]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A server that accepts connections and never says a word (a hung host)."""
    server = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    for connection in held:
        connection.close()
    server.close()


def assert_one_line(result, *named: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for text in named:
        assert text in lines[0], lines[0]
    assert PASSWORD not in result.stderr + result.stdout


@pytest.mark.parametrize("command", STORE_COMMANDS, ids=" ".join)
def test_an_unreachable_store_is_one_line_naming_it(command: list[str], tmp_path) -> None:
    url = f"postgresql+psycopg://datasync:{PASSWORD}@127.0.0.1:{closed_port()}/datasync"
    result = datasync({"DATASYNC_DATABASE_URL": url}, *command, cwd=tmp_path, timeout=120)
    assert_one_line(result, "cannot reach the store at postgresql+psycopg://datasync:***@127.0.0.1", "refused")


@pytest.mark.redis
def test_a_worker_with_an_unreachable_store_is_one_line(redis_server: RedisServer, tmp_path) -> None:
    url = f"postgresql+psycopg://datasync:{PASSWORD}@127.0.0.1:{closed_port()}/datasync"
    env = {"DATASYNC_DATABASE_URL": url, "DATASYNC_BROKER_URL": redis_server.url()}
    assert_one_line(datasync(env, "worker", cwd=tmp_path, timeout=120), "cannot reach the store")


def test_a_sqlite_store_that_cannot_be_opened_is_one_line(tmp_path) -> None:
    url = f"sqlite:///{tmp_path}/no/such/directory/store.db"
    assert_one_line(datasync({"DATASYNC_DATABASE_URL": url}, "status"), "cannot reach the store at sqlite:///")


@pytest.mark.parametrize("command", BROKER_COMMANDS, ids=" ".join)
def test_an_unreachable_broker_is_one_line_naming_it(command: list[str], tmp_path) -> None:
    env = {
        "DATASYNC_DATABASE_URL": f"sqlite:///{tmp_path / 'store.db'}",
        "DATASYNC_BROKER_URL": f"redis://:{PASSWORD}@127.0.0.1:{closed_port()}/0",
    }
    started = time.monotonic()
    result = datasync(env, *command, cwd=tmp_path, timeout=120)
    assert_one_line(result, "cannot reach the broker at redis://:***@127.0.0.1:", "refused")
    assert time.monotonic() - started < 20  # it took 26 s of retries and a 528-line traceback


@pytest.mark.parametrize("kind", ["store", "broker"])
def test_a_server_that_never_answers_fails_within_the_connect_timeout(kind: str, silent_port: int, tmp_path) -> None:
    env = {"DATASYNC_CONNECT_TIMEOUT": "2", "DATASYNC_DATABASE_URL": f"sqlite:///{tmp_path / 'store.db'}"}
    if kind == "store":
        env["DATASYNC_DATABASE_URL"] = f"postgresql+psycopg://u:{PASSWORD}@127.0.0.1:{silent_port}/db"
        command = ["status"]
    else:
        env["DATASYNC_BROKER_URL"] = f"redis://127.0.0.1:{silent_port}/0"
        command = ["resync", "ethnic_category", "--wait"]
    result = datasync(env, *command, cwd=tmp_path, timeout=90)
    assert_one_line(result, f"cannot reach the {kind} at")
    assert "timeout" in result.stderr.lower()


@pytest.mark.parametrize("command", REVIEW_COMMANDS, ids=" ".join)
def test_an_unknown_key_exits_2_in_review_commands(command: list[str], tmp_path) -> None:
    env = {"DATASYNC_DATABASE_URL": f"sqlite:///{tmp_path / 'store.db'}"}
    result = datasync(env, command[0], "no_such_list", *command[1:], cwd=tmp_path)
    assert_one_line(result, "no_such_list")


@pytest.mark.parametrize("command", [["sync"], ["resync"], ["sync", "--dry-run"]], ids=" ".join)
def test_an_unknown_key_exits_2_in_sync_commands(command: list[str], tmp_path) -> None:
    env = {"DATASYNC_DATABASE_URL": f"sqlite:///{tmp_path / 'store.db'}"}
    assert_one_line(datasync(env, *command, "no_such_list", cwd=tmp_path), "no_such_list")
