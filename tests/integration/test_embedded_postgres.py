"""Each in-process user of the embedded Postgres stops only the server it started: a
command run in a process that also holds another embedded server (here, the test
session's pgvector server) leaves that one running, and two runtimes on one data
directory share its server until the last of them closes."""

from __future__ import annotations

import warnings
from pathlib import Path

import psycopg
import pytest

from penny.cache_cli import stats_command
from penny.runtime import open_runtime
from tests.support import make_settings


def answers(url: str) -> bool:
    try:
        with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"),
                             connect_timeout=5) as conn:
            return conn.execute("SELECT 1").fetchone() == (1,)
    except psycopg.OperationalError:
        return False


def running(data_dir: Path) -> bool:
    """The server under `data_dir` runs: Postgres removes its pid file as it stops."""
    return (data_dir / "pg" / "postmaster.pid").exists()


@pytest.fixture(autouse=True)
def _quiet_server_import() -> None:
    # The server's wheel asks platformdirs for a runtime directory at import; where
    # XDG_RUNTIME_DIR is unset that is a warning about its fallback, not about penny.
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")


def test_a_command_stops_only_the_embedded_server_it_started(
    tmp_path: Path, pgvector_database_url: str
) -> None:
    # `penny cache stats`, given a database URL, started nothing, so it stops nothing.
    stats_command(make_settings(tmp_path / "given", pgvector_database_url), None)
    assert answers(pgvector_database_url)

    # With no URL it starts its own server under its data directory, and stops that one.
    own = make_settings(tmp_path / "own", "")
    stats_command(own, None)
    assert not running(own.data_dir)
    assert answers(pgvector_database_url)  # the session's server is still up


def test_runtimes_sharing_a_data_directory_share_its_server_until_the_last_closes(
    tmp_path: Path,
) -> None:
    settings = make_settings(tmp_path, "")
    first = open_runtime(settings)
    second = open_runtime(settings, run_migrations=False)
    first.close()
    assert running(settings.data_dir) and answers(second.database_url)
    second.close()
    assert not running(settings.data_dir) and not answers(second.database_url)
