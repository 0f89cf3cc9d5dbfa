"""API keys against a real Postgres: made, listed and revoked through the admin API and
`penny keys`; stored only as hashes; never in logs or error messages; and no-auth serving
refused beyond loopback."""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient
from sqlalchemy import text
from typer.testing import CliRunner

from api.app import create_app
from penny.cli import app as cli
from penny.errors import UnsafeBinding
from penny.runtime import Runtime, open_runtime
from penny.serve import refuse_open_binding
from tests.support import LiveServer, make_settings, reset_tables

ADMIN_KEY = "admin-secret-0123"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
JOB = {"messages": [{"role": "user", "content": "What is 2 + 2?"}], "max_tokens": 8}


@pytest.fixture
def runtime(tmp_path: Path, database_url: str) -> Iterator[Runtime]:
    # The admin key is configured by its hash: the plain key need not be in the environment.
    digest = hashlib.sha256(ADMIN_KEY.encode()).hexdigest()
    runtime = open_runtime(make_settings(tmp_path, database_url, key_cache_seconds=0,
                                         admin_api_keys=[f"sha256:{digest}"]))
    reset_tables(runtime)
    yield runtime
    runtime.close()


@pytest.fixture
def client(runtime: Runtime) -> Iterator[TestClient]:
    with TestClient(create_app(runtime)) as client:
        yield client


def test_admin_api_makes_lists_and_revokes_keys(client: TestClient, runtime: Runtime) -> None:
    made = client.post("/v1/admin/keys", json={"tenant": "acme", "name": "ci"}, headers=ADMIN)
    assert made.status_code == 201, made.text
    key = made.json()["key"]
    assert key.startswith("pk_") and len(key) >= 40
    assert made.json()["prefix"] == key[:11]
    mine = {"Authorization": f"Bearer {key}"}

    job = client.post("/v1/jobs", json=JOB, headers=mine)
    assert job.status_code == 202
    # The Anthropic SDK's header works as well.
    assert client.get(f"/v1/jobs/{job.json()['id']}", headers={"x-api-key": key}
                      ).status_code == 200

    listed = client.get("/v1/admin/keys", headers=ADMIN).json()["data"]
    assert [(k["tenant"], k["name"], k["prefix"]) for k in listed] == [("acme", "ci", key[:11])]
    assert listed[0]["last_used_at"] is not None
    assert key not in client.get("/v1/admin/keys", headers=ADMIN).text
    assert client.get("/v1/admin/keys?tenant=other", headers=ADMIN).json()["data"] == []

    with runtime.sessions() as session:
        stored = session.execute(text("SELECT key_hash, prefix FROM api_keys")).one()
        dump = session.execute(text("SELECT row_to_json(k)::text FROM api_keys k")).scalar_one()
    assert stored.key_hash == hashlib.sha256(key.encode()).hexdigest()
    assert key not in dump

    revoked = client.post(f"/v1/admin/keys/{made.json()['id']}/revoke", headers=ADMIN)
    assert revoked.status_code == 200
    assert revoked.json()["revoked_at"] is not None
    # PENNY_KEY_CACHE_SECONDS is 0 here: the next request already asks Postgres.
    refused = client.post("/v1/jobs", json=JOB, headers=mine)
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "invalid_api_key"
    # Auth stays on with every key revoked: penny does not fall back to no-auth.
    assert client.post("/v1/jobs", json=JOB).status_code == 401
    assert client.post("/v1/admin/keys/not-a-uuid/revoke", headers=ADMIN).status_code == 404


def test_admin_api_needs_an_admin_key(client: TestClient) -> None:
    made = client.post("/v1/admin/keys", json={"tenant": "acme"}, headers=ADMIN).json()
    for headers in ({}, {"Authorization": f"Bearer {made['key']}"},
                    {"Authorization": "Bearer admin-secret-0124"}):
        response = client.get("/v1/admin/keys", headers=headers)
        assert response.status_code == 401
        assert client.post("/v1/admin/keys", json={"tenant": "x"},
                           headers=headers).status_code == 401


def test_admin_api_is_off_without_admin_keys(tmp_path: Path, database_url: str) -> None:
    runtime = open_runtime(make_settings(tmp_path, database_url))
    try:
        with TestClient(create_app(runtime)) as client:
            response = client.get("/v1/admin/keys", headers=ADMIN)
        assert response.status_code == 401
        assert "PENNY_ADMIN_API_KEYS" in response.json()["error"]["message"]
    finally:
        runtime.close()


def test_cli_makes_lists_and_revokes_keys(
    runtime: Runtime, client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PENNY_DATABASE_URL", runtime.database_url)
    monkeypatch.setenv("PENNY_DATA_DIR", str(runtime.settings.data_dir))
    runner = CliRunner()
    made = runner.invoke(cli, ["keys", "create", "acme", "--name", "laptop"])
    assert made.exit_code == 0, made.output
    key = made.stdout.strip()
    assert key.startswith("pk_")
    assert client.get("/v1/files", headers={"Authorization": f"Bearer {key}"}
                      ).status_code == 200

    listed = runner.invoke(cli, ["keys", "list"])
    assert listed.exit_code == 0
    row = listed.stdout.splitlines()[1].split("\t")
    assert row[1:4] == [key[:11], "acme", "laptop"]
    assert key not in listed.stdout

    revoked = runner.invoke(cli, ["keys", "revoke", row[0]])
    assert revoked.exit_code == 0, revoked.output
    assert client.get("/v1/files", headers={"Authorization": f"Bearer {key}"}
                      ).status_code == 401
    assert runner.invoke(cli, ["keys", "revoke", "nope"]).exit_code == 2


def test_no_auth_binds_only_to_loopback(runtime: Runtime, tmp_path: Path, database_url: str,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # `runtime` has emptied the tables: no key exists yet.
    def check(**overrides: object) -> None:
        runtime = open_runtime(make_settings(tmp_path, database_url, **overrides))
        try:
            refuse_open_binding(runtime)
        finally:
            runtime.close()

    for host in ("0.0.0.0", "::", "10.1.2.3", "example.com"):
        with pytest.raises(UnsafeBinding, match="PENNY_ALLOW_UNAUTHENTICATED"):
            check(api_host=host)
    for host in ("127.0.0.1", "localhost", "::1"):
        check(api_host=host)
    check(api_host="0.0.0.0", allow_unauthenticated=True)
    check(api_host="0.0.0.0", api_keys={"k": "acme"})

    # `penny api` says why and exits 2 before it listens.
    monkeypatch.setenv("PENNY_DATABASE_URL", database_url)
    monkeypatch.setenv("PENNY_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("PENNY_API_HOST", "0.0.0.0")
    refused = CliRunner().invoke(cli, ["api"])
    assert refused.exit_code == 2
    assert "refusing to listen on 0.0.0.0" in refused.stderr

    monkeypatch.delenv("PENNY_API_HOST")
    made = CliRunner().invoke(cli, ["keys", "create", "acme"])
    assert made.exit_code == 0
    check(api_host="0.0.0.0")  # a key exists now


def test_keys_never_reach_logs_or_errors(
    runtime: Runtime, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    app = create_app(runtime)
    with TestClient(app) as client:
        key = client.post("/v1/admin/keys", json={"tenant": "acme"}, headers=ADMIN).json()["key"]
    wrong = key[:-1] + ("A" if key[-1] != "A" else "B")
    server = LiveServer(app)
    # uvicorn's access log, at info, as `penny api` runs it.
    server.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=server.port,
                                                  log_level="info"))
    server.thread = threading.Thread(target=server.server.run, daemon=True)
    with server, httpx.Client(base_url=server.url) as http:
        ok = http.post("/v1/jobs", json=JOB, headers={"Authorization": f"Bearer {key}"})
        bad = http.get("/v1/files", headers={"Authorization": f"Bearer {wrong}"})
        bad_x = http.get("/v1/files", headers={"x-api-key": wrong})
        admin = http.get("/v1/admin/keys", headers={"Authorization": f"Bearer {wrong}"})
    assert ok.status_code == 202
    assert (bad.status_code, bad_x.status_code, admin.status_code) == (401, 401, 401)
    out, err = capfd.readouterr()
    logged = out + err + caplog.text
    # The access log did run (else the check below would prove nothing).
    assert '"POST /v1/jobs HTTP/1.1" 202' in logged
    assert '"GET /v1/files HTTP/1.1" 401' in logged
    for secret in (key, wrong, ADMIN_KEY, key[11:]):
        assert secret not in logged
        for response in (bad, bad_x, admin):
            assert secret not in response.text
            assert secret not in str(response.headers)

