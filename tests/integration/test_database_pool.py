"""The connection pool hands out live connections without a round trip per checkout: a
healthy pool runs only the caller's statements, and a connection whose backend the server
ended is replaced at checkout instead of failing the caller's first statement."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from sqlalchemy import Engine, event, text

from penny.database import connection_is_dead, make_engine, sqlalchemy_url
from tests.support import wait_until


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    # One pooled connection: a checkout after the kill can only get that one, or a new one.
    db = make_engine(sqlalchemy_url(database_url), pool_size=1, max_overflow=0)
    yield db
    db.dispose()


def statements_run(db: Engine) -> list[str]:
    seen: list[str] = []
    event.listen(db, "before_cursor_execute",
                 lambda _conn, _cursor, statement, *_: seen.append(statement))
    return seen


def backend_pid(db: Engine) -> int:
    with db.connect() as conn:
        return int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())


def terminate(database_url: str, pid: int) -> None:
    with psycopg.connect(database_url, autocommit=True) as admin:
        assert admin.execute("SELECT pg_terminate_backend(%s)", [pid]).fetchone() == (True,)

        def gone() -> bool:
            row = admin.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s",
                                [pid]).fetchone()
            return row == (0,)

        wait_until(gone, timeout=30, what=f"backend {pid} to exit")


def test_a_healthy_pool_runs_only_the_callers_statements(engine: Engine) -> None:
    first = backend_pid(engine)
    seen = statements_run(engine)
    assert [backend_pid(engine) for _ in range(3)] == [first] * 3
    assert seen == ["SELECT pg_backend_pid()"] * 3  # no pre-ping before any of them


def test_a_connection_the_server_ended_is_replaced_at_checkout(
    engine: Engine, database_url: str
) -> None:
    first = backend_pid(engine)
    terminate(database_url, first)
    seen = statements_run(engine)
    with engine.connect() as conn:
        replaced = int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())
    assert replaced != first
    assert seen == ["SELECT pg_backend_pid()"]  # found dead without asking the server


def test_the_liveness_check_reads_the_socket(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        pid = conn.info.backend_pid
        assert not connection_is_dead(conn)
        terminate(database_url, pid)
        assert connection_is_dead(conn)
    assert connection_is_dead(conn)  # closed
