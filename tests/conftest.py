"""Shared fixtures: a real Postgres database of our own, real Redis on a db number of our own,
the real vLLM engine with the offline model and the real embedder (each loaded once per
session), a real HTTP server."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis

from penny.runtime import Runtime, open_runtime
from penny.settings import Settings
from tests.support import MODELS_DIR, free_port, make_settings, reset_tables

ADMIN_URL = os.environ.get("PENNY_TEST_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
REDIS_DB = int(os.environ.get("PENNY_TEST_REDIS_DB", "13"))


def _postgres_admin_url(tmp_root: Path) -> str:
    """The machine's Postgres if it answers; otherwise a real embedded one we start."""
    try:
        psycopg.connect(ADMIN_URL, connect_timeout=3).close()
        return ADMIN_URL
    except psycopg.OperationalError:
        from penny.database import start_embedded_postgres

        return start_embedded_postgres(tmp_root)


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    admin = _postgres_admin_url(tmp_path_factory.mktemp("pg"))
    name = f"penny_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = admin.rpartition("/")
    query = ""
    if "?" in admin:  # embedded server URLs carry the socket directory as a query
        query = "?" + admin.split("?", 1)[1]
    yield f"{base}/{name}{query}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pgvector_database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A database of our own on a Postgres that has pgvector: the embedded server (the
    machine's Postgres may lack the extension), started for this session."""
    from penny.database import start_embedded_postgres, stop_embedded_postgres

    data_dir = tmp_path_factory.mktemp("pgvector")
    with warnings.catch_warnings():
        # The server library asks platformdirs for a runtime directory at import; where
        # XDG_RUNTIME_DIR is unset that is a warning about its fallback, not about penny.
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
        admin = start_embedded_postgres(data_dir)
    name = f"penny_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base, _, query = admin.partition("?")
    yield f"{base.rpartition('/')[0]}/{name}?{query}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    stop_embedded_postgres(data_dir)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    url = f"redis://{REDIS_HOST}:{REDIS_PORT}/{REDIS_DB}"
    process = None
    try:
        redis.Redis.from_url(url).ping()
    except redis.ConnectionError:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("Redis is down on 127.0.0.1:6379 and no redis-server binary is here")
        port = free_port()
        process = subprocess.Popen([binary, "--port", str(port), "--save", "",
                                    "--appendonly", "no"], stdout=subprocess.DEVNULL)
        url = f"redis://{REDIS_HOST}:{port}/{REDIS_DB}"
        for _ in range(50):
            try:
                redis.Redis.from_url(url).ping()
                break
            except redis.ConnectionError:
                time.sleep(0.1)
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()
    client.close()
    if process is not None:
        process.terminate()
        process.wait()


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return make_settings(tmp_path, database_url)


@pytest.fixture
def runtime(settings: Settings) -> Iterator[Runtime]:
    runtime = open_runtime(settings)
    reset_tables(runtime)
    yield runtime
    runtime.close()


@pytest.fixture(scope="session")
def engine(tmp_path_factory: pytest.TempPathFactory) -> object:
    """The real vLLM engine on the offline model, started once for the whole session."""
    from workers.vllm_engine import VllmEngine

    engine_settings = Settings(data_dir=tmp_path_factory.mktemp("engine"), models_dir=MODELS_DIR,
                               engine_enforce_eager=True)
    return VllmEngine(engine_settings, engine_settings.default_model)


@pytest.fixture(scope="session")
def embedder(tmp_path_factory: pytest.TempPathFactory) -> object:
    """The real sentence-transformers embedder on the offline embedding model (from its
    wheel), loaded once for the whole session. It needs no vLLM."""
    from workers.sentence_embedder import SentenceTransformerEmbedder

    embedder_settings = Settings(data_dir=tmp_path_factory.mktemp("embedder"))
    return SentenceTransformerEmbedder(embedder_settings,
                                       embedder_settings.default_embedding_model)
