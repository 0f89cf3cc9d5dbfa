"""Helpers the tests share (fixtures live in conftest.py)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import uvicorn
from sqlalchemy import text

from penny.runtime import Runtime
from penny.settings import Settings

if TYPE_CHECKING:
    import openai

REPO = Path(__file__).resolve().parent.parent
# The model directory `make install` prepares; tests reuse it instead of converting again.
MODELS_DIR = Path(os.environ.get("PENNY_TEST_MODELS_DIR", REPO / "var" / "models"))


TABLES = ("ledger_entries", "results", "jobs", "batches", "files", "submissions", "api_keys",
          "tenants", "workers", "result_cache", "price_cards", "calibrations",
          "semantic_cache_counters", "router_classifiers", "ledger_daily", "max_tokens_caps",
          "ledger_output_daily", "request_sends", "request_repeats", "client_retries_daily")


def reset_tables(runtime: Runtime) -> None:
    """Empty every table, so a test sees only its own rows (the database is per session)."""
    with runtime.db.begin() as conn:
        conn.execute(text(f"TRUNCATE {', '.join(TABLES)} CASCADE"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_settings(tmp_path: Path, database_url: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "data_dir": tmp_path / "data",
        "database_url": database_url,
        "models_dir": MODELS_DIR,
        "lease_seconds": 30.0,
        "sweep_interval_seconds": 0.5,
        "engine_enforce_eager": True,
    }
    values.update(overrides)
    return Settings.model_validate(values)


class LiveServer:
    """uvicorn on a loopback port, in a thread."""

    def __init__(self, app: object) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")  # type: ignore[arg-type]
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        # Clients made for this server (SDKs): closed with it, so no connection of theirs
        # is left for the garbage collector to report as an unclosed socket later.
        self.clients: list[Any] = []

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *_: object) -> None:
        for client in self.clients:
            client.close()
        self.server.should_exit = True
        self.thread.join(timeout=10)


def wait_until(
    predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.2
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def jsonl(lines: list[Any]) -> bytes:
    """A JSONL file: dicts are dumped, strings (deliberately bad lines) kept as they are."""
    return "".join((line if isinstance(line, str) else json.dumps(line)) + "\n"
                   for line in lines).encode()


def read_jsonl(client: openai.OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    return [json.loads(line) for line in client.files.content(file_id).text.splitlines()]


def openai_sdk(server: LiveServer) -> openai.OpenAI:
    import openai

    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="any", max_retries=0)
    server.clients.append(client)
    return client


def penny_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment a `penny` command needs to run against the test's database."""
    env = {
        **os.environ,
        "PENNY_DATABASE_URL": settings.database_url or "",
        "PENNY_DATA_DIR": str(settings.data_dir),
        "PENNY_MODELS_DIR": str(settings.resolved_models_dir),
        **extra,
    }
    if settings.redis_url:
        env.setdefault("PENNY_REDIS_URL", settings.redis_url)
    return env


class PennyProcess:
    """A `penny` command in a process of its own, its output in `log_path`; terminated on
    exit."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.args, self.env, self.log_path = args, env, log_path

    def __enter__(self) -> PennyProcess:
        penny = Path(sys.executable).with_name("penny")
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen([str(penny), *self.args], env=self.env,
                                        stdout=self._log, stderr=subprocess.STDOUT)
        return self

    def assert_running(self) -> None:
        assert self.process.poll() is None, self.log_path.read_text()

    def __exit__(self, *_: object) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)
        self._log.close()


def wait_for_http(process: PennyProcess, url: str, timeout: float = 120) -> None:
    import httpx

    def answers() -> bool:
        process.assert_running()
        try:
            return httpx.get(url, timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    wait_until(answers, timeout=timeout, what=f"{url} to answer")
