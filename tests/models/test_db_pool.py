"""PostgreSQL connections are pinged before use only after being idle, and a dead one is replaced."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from models import db

pytestmark = pytest.mark.postgres


def backend_pid(url: str) -> int:
    with db.get_engine(url).connect() as connection:
        return int(connection.execute(text("SELECT pg_backend_pid()")).scalar_one())


def test_a_connection_just_returned_is_reused_without_a_ping(postgres_server) -> None:
    url = postgres_server.new_database()
    assert backend_pid(url) == backend_pid(url)  # the same pooled connection, used at once


def test_an_idle_connection_the_server_closed_is_replaced_at_checkout(
    postgres_server, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = postgres_server.new_database()
    engine, pid = db.get_engine(url), text("SELECT pg_backend_pid()")
    with engine.connect() as first, engine.connect() as second:
        killed = first.execute(pid).scalar_one()
        first.close()  # back in the pool, idle
        assert second.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": killed}).scalar_one()
    monkeypatch.setattr(db, "PING_AFTER_IDLE_SECONDS", 0.0)  # every pooled connection counts as idle
    with engine.connect() as first_out, engine.connect() as second_out:  # the dead one among them
        pids = {first_out.execute(pid).scalar_one(), second_out.execute(pid).scalar_one()}
    assert killed not in pids and len(pids) == 2  # pinged, found dead, connected afresh: no error
