"""CPU per single-job `POST /v1/jobs` inside penny's own process, without HTTP: the app
is called as ASGI directly (no uvicorn, no socket, no load generator on the same cores),
so what is counted is what the app and its group-commit writer spend per durable job.
Beside it, in the same run, the no-persistence reference app (`bench/intake_reference.py`)
called the same way.

    .venv/bin/python bench/intake_cpu.py [--requests 3000] [--clients 8,32]
    .venv/bin/python bench/intake_cpu.py --compare OTHER_CHECKOUT   # before/after
    .venv/bin/python bench/intake_cpu.py --profile 25               # where the time goes

CPU is the process' user+system time (`time.process_time`: every thread, the writer
included) per request; Postgres' own CPU is not in it. Each target runs in a child process
of its own with a fresh database, one after the other; with `--compare` the same
scenarios run against another checkout's code too, so a change is read as a ratio taken
in one run. Every penny request must be answered 202 and its job found in Postgres.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import os
import pstats
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
ASGI = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


def _body(tag: str) -> bytes:
    return ('{"messages":[{"role":"user","content":"cpu bench ' + tag
            + ': what is the capital of France?"}],"max_tokens":16}').encode()


async def _post(app: ASGI, body: bytes) -> tuple[int, bytes]:
    scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
             "http_version": "1.1", "method": "POST", "scheme": "http", "path": "/v1/jobs",
             "raw_path": b"/v1/jobs", "query_string": b"", "root_path": "",
             "headers": [(b"host", b"bench"), (b"content-type", b"application/json"),
                         (b"content-length", str(len(body)).encode())],
             "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 8000)}
    delivered = False
    status = 0
    chunks: list[bytes] = []

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # the client never goes away
        raise AssertionError

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = int(message["status"])
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    return status, b"".join(chunks)


async def _drive(app: ASGI, requests: int, clients: int, prefix: str) -> list[bytes]:
    answers: list[bytes] = []
    counter = iter(range(requests))

    async def client() -> None:
        for n in counter:
            status, answer = await _post(app, _body(f"{prefix}-{n}"))
            if status != 202:
                raise SystemExit(f"answered {status}: {answer[:300]!r}")
            answers.append(answer)

    await asyncio.gather(*(client() for _ in range(clients)))
    return answers


def _run_loop(coroutine: Awaitable[Any]) -> Any:
    try:
        import uvloop  # what uvicorn runs on when it is installed
        factory: Any = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coroutine)  # type: ignore[arg-type]


class _ThreadProfiles:
    """cProfile sees one thread; this gives every thread started while it is on (the
    group-commit writer) a profile of its own, added up at the end."""

    def __init__(self) -> None:
        self.profiles: list[cProfile.Profile] = []
        self._original = threading.Thread.run

    def __enter__(self) -> _ThreadProfiles:
        profiles, original = self.profiles, self._original

        def run(thread: threading.Thread) -> None:
            profile = cProfile.Profile()
            profiles.append(profile)
            profile.enable()
            try:
                original(thread)
            finally:
                profile.disable()

        threading.Thread.run = run  # type: ignore[method-assign]
        return self

    def __exit__(self, *_: object) -> None:
        threading.Thread.run = self._original  # type: ignore[method-assign]


def _child(args: argparse.Namespace) -> None:
    """One target in this process: print one JSON line per scenario."""
    import psycopg

    sys.path.insert(0, str(REPO / "bench"))
    from intake_load import fresh_database

    from penny.settings import Settings

    with fresh_database(args.admin_url) as database_url, \
            tempfile.TemporaryDirectory() as data_dir:
        settings = Settings(database_url=database_url, data_dir=Path(data_dir),
                            models_dir=os.environ.get("PENNY_MODELS_DIR",
                                                      str(REPO / "var" / "models")))
        if args.target == "reference":
            from bench.intake_reference import create_app as reference_app
            app: Any = reference_app()
            runtime = None
        else:
            from api.app import create_app
            from penny.runtime import open_runtime
            runtime = open_runtime(settings)
            app = create_app(runtime)
        try:
            _run_loop(_drive(app, 200, 8, "warm"))
            for clients in map(int, args.clients.split(",")):
                profiles = _ThreadProfiles() if args.profile else None
                main_profile = cProfile.Profile() if args.profile else None
                cpu, wall = time.process_time(), time.perf_counter()
                if profiles is not None and main_profile is not None:
                    with profiles:
                        main_profile.enable()
                        answers = _run_loop(_drive(app, args.requests, clients, f"c{clients}"))
                        main_profile.disable()
                else:
                    answers = _run_loop(_drive(app, args.requests, clients, f"c{clients}"))
                cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
                durable = None
                if runtime is not None:
                    ids = [json.loads(a)["id"] for a in answers]
                    with psycopg.connect(database_url.replace("+psycopg", "")) as conn:
                        row = conn.execute("SELECT count(*) FROM jobs WHERE id = ANY(%s::uuid[])",
                                           [ids]).fetchone()
                    durable = int(row[0]) if row else 0
                print(json.dumps({"clients": clients, "requests": len(answers),
                                  "code": str(Path(sys.modules["intake.schema"].__file__ or "")
                                              .parent.parent),
                                  "durable": durable, "cpu_us": 1e6 * cpu / len(answers),
                                  "per_second": len(answers) / wall}), flush=True)
                if main_profile is not None and profiles is not None:
                    stats = pstats.Stats(main_profile, stream=(out := io.StringIO()))
                    for profile in profiles.profiles:
                        stats.add(profile)
                    stats.sort_stats("tottime").print_stats(args.profile)
                    print(out.getvalue(), file=sys.stderr)
        finally:
            if runtime is not None:
                runtime.close()


def _measure(checkout: Path, target: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    command = [sys.executable, str(Path(__file__).resolve()), "--child", target,
               "--requests", str(args.requests), "--clients", args.clients,
               "--admin-url", args.admin_url, "--profile", str(args.profile)]
    done = subprocess.run(command, env=env, cwd=checkout, capture_output=True, text=True,
                          check=False)
    if done.returncode:
        raise SystemExit(f"{target} in {checkout} failed:\n{done.stderr[-4000:]}")
    if args.profile:
        print(f"--- profile: {target}, {checkout.name}\n{done.stderr}", file=sys.stderr)
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--admin-url", default=os.environ.get(
        "PENNY_BENCH_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"))
    parser.add_argument("--requests", type=int, default=3000, help="per scenario")
    parser.add_argument("--clients", default="8,32", help="concurrent requests")
    parser.add_argument("--compare", type=Path, default=None,
                        help="another checkout whose penny is measured beside this one")
    parser.add_argument("--profile", type=int, default=0,
                        help="print this many functions by own time, per target")
    parser.add_argument("--child", choices=("penny", "reference"), default=None,
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.target = args.child
        _child(args)
        return
    targets = [("reference", REPO, "reference")]
    if args.compare is not None:
        targets.append((f"penny ({args.compare.name})", args.compare.resolve(), "penny"))
    targets.append(("penny (this checkout)", REPO, "penny"))
    rows: list[tuple[str, dict[str, Any]]] = []
    for label, checkout, target in targets:
        for result in _measure(checkout, target, args):
            rows.append((label, result))
            print(f"{label:30} {result['clients']:3} clients {result['cpu_us']:8.0f} µs/request",
                  file=sys.stderr)
    reference = {r["clients"]: r for label, r in rows if label == "reference"}
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\ncommand: python bench/intake_cpu.py {' '.join(sys.argv[1:])}")
    print(f"machine: {os.cpu_count()} cores, load average {load} at the end\n")
    for label, r in rows:
        print(f"- {label}: code from {r['code']}", file=sys.stderr)
    print("| clients | target | CPU µs/request | x reference | requests/s (in process) "
          "| durable |")
    print("|---:|---|---:|---:|---:|---:|")
    for label, r in sorted(rows, key=lambda row: row[1]["clients"]):
        ref = reference.get(r["clients"])
        ratio = f"{r['cpu_us'] / ref['cpu_us']:.2f}" if ref and label != "reference" else ""
        durable = "" if r["durable"] is None else f"{r['durable']}/{r['requests']}"
        print(f"| {r['clients']} | {label} | {r['cpu_us']:,.0f} | {ratio} | "
              f"{r['per_second']:,.0f} | {durable} |")


if __name__ == "__main__":
    main()
