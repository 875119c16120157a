"""The fixture upstream run by hand (README's offline walk-through) stops cleanly when asked."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.upstream import Upstream


def ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # what a shell does to a job started with `&`


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_backgrounded_upstream_stops_on_signal_and_removes_its_pid_file(tmp_path: Path, signum: int) -> None:
    pid_file = tmp_path / "upstream.pid"
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.upstream", "--port", "0", "--pid-file", str(pid_file)],
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=ignore_sigint,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().startswith("serving ")
        assert process.stdout.readline().startswith("export DATASYNC_URL_REWRITES=")
        assert pid_file.read_text().strip() == str(process.pid)
        process.send_signal(signum)
        assert process.wait(timeout=30) == 0
        assert process.stdout.read() == "fixture upstream stopped\n"
        assert not pid_file.exists()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_accepted_connections_send_without_nagle_delay() -> None:
    upstream = Upstream()
    try:
        with socket.create_connection(upstream.server.server_address, timeout=30):
            accepted, _ = upstream.server.get_request()  # the server's own accept path, as serve_forever uses it
            with accepted:
                assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        upstream.server.server_close()
