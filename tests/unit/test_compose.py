"""docker-compose.yml and the Dockerfiles, checked as far as can be without Docker: the
compose file is valid against the compose schema (vendored, never downloaded), every
PENNY_* variable it sets is a real setting with a valid value, every penny command it or
an image runs parses with penny's own CLI, every image it builds has its Dockerfile, and
every file a Dockerfile copies exists."""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import typer.main
import yaml

from penny.cli import app
from penny.settings import Settings
from tests.support import REPO

COMPOSE = REPO / "docker-compose.yml"
SCHEMA = REPO / "tests" / "compose" / "compose-spec.json"
# ${NAME:-default} and ${NAME}: compose's interpolation; $$ is a literal $.
INTERPOLATION = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}")


def interpolate(value: str) -> str:
    """The value compose would use with none of the variables set."""
    return INTERPOLATION.sub(lambda m: m.group("default") or "", value).replace("$$", "$")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def services(compose: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    yield from compose["services"].items()


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: interpolate(str(value)) for key, value in env.items()}


def runs_penny(service: dict[str, Any]) -> bool:
    return str(service.get("image", "")).startswith("penny-")


def penny_usage_error(argv: list[str]) -> str | None:
    """None if `argv` (after `penny`) is a command penny's CLI accepts; else why not."""
    command: Any = typer.main.get_command(app)
    name, args = "penny", list(argv)
    while hasattr(command, "commands"):  # a group: the next word names a subcommand
        if not args or args[0] not in command.commands:
            return f"no command {args[:1]} under {name!r}"
        name, args = args[0], args[1:]
        command = command.commands[name]
    try:
        command.make_context(name, args)
    except Exception as error:  # the CLI's usage errors: unknown option, bad value
        return str(error)
    return None


def dockerfile_instructions(path: Path) -> Iterator[tuple[str, str]]:
    """(instruction, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            instruction, _, rest = line.partition(" ")
            yield instruction.upper(), rest.strip()


def extras() -> set[str]:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    return set(pyproject["project"]["optional-dependencies"])


def test_compose_file_matches_the_compose_schema(compose: dict[str, Any]) -> None:
    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.Draft201909Validator(schema)
    problems = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
                for e in validator.iter_errors(compose)]
    assert problems == []


def test_the_schema_check_catches_a_wrong_key(compose: dict[str, Any]) -> None:
    broken = json.loads(json.dumps(compose))
    broken["services"]["api"]["healthcheck"]["intervall"] = "10s"
    validator = jsonschema.Draft201909Validator(json.loads(SCHEMA.read_text()))
    assert not validator.is_valid(broken)


def test_every_penny_variable_is_a_setting_with_a_valid_value(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    known = {f"PENNY_{name.upper()}" for name in Settings.model_fields}
    checked = 0
    for name, service in services(compose):
        env = {k: v for k, v in environment(service).items() if k.startswith("PENNY_")}
        unknown = sorted(k for k in env if k.split("__")[0] not in known)
        assert unknown == [], f"{name} sets variables penny does not read: {unknown}"
        if not env:
            continue
        with monkeypatch.context() as patch:
            for key, value in env.items():
                patch.setenv(key, value)
            Settings()  # validates every value as penny would at start
        checked += 1
    assert checked >= 6  # migrate, api, coalescer and the workers


def test_every_penny_command_parses(compose: dict[str, Any]) -> None:
    commands = [(name, service["command"]) for name, service in services(compose)
                if runs_penny(service)]
    for dockerfile in (REPO / "docker").glob("*.Dockerfile"):
        for instruction, args in dockerfile_instructions(dockerfile):
            if instruction == "CMD":
                commands.append((dockerfile.name, json.loads(args)))
    assert len(commands) >= 9
    for where, command in commands:
        argv = command if isinstance(command, list) else shlex.split(command)
        assert argv[0] == "penny", where
        assert penny_usage_error(argv[1:]) is None, (where, argv, penny_usage_error(argv[1:]))


def test_the_command_check_catches_a_wrong_option() -> None:
    assert penny_usage_error(["api", "--port", "8000"]) is None
    assert penny_usage_error(["api", "--prot", "8000"]) is not None
    assert penny_usage_error(["worker", "--metrics-port", "many"]) is not None
    assert penny_usage_error(["serve"]) is not None


def test_every_image_is_built_from_an_existing_dockerfile_with_existing_sources(
    compose: dict[str, Any],
) -> None:
    built: set[str] = set()
    for name, service in services(compose):
        if not runs_penny(service):
            continue
        build = service.get("build")
        assert build is not None, f"{name} runs {service['image']} but does not build it"
        context = (COMPOSE.parent / build["context"]).resolve()
        dockerfile = context / build.get("dockerfile", "Dockerfile")
        assert dockerfile.is_file(), f"{name}: no {dockerfile}"
        instructions = list(dockerfile_instructions(dockerfile))
        declared = {args.split("=")[0] for kind, args in instructions if kind == "ARG"}
        for arg, value in (build.get("args") or {}).items():
            assert arg in declared, f"{name} passes {arg}, which {dockerfile.name} ignores"
            if arg == "PENNY_EXTRA":
                assert value in extras(), f"{name}: no extra {value!r} in pyproject.toml"
        for kind, args in instructions:
            if kind != "COPY" or args.startswith("--from="):
                continue
            *sources, _ = args.split()
            for source in sources:
                assert (context / source).exists(), f"{dockerfile.name} copies {source}"
        for kind, args in instructions:
            for extra in re.findall(r"\.\[([a-z]+)\]", args) if kind == "RUN" else []:
                assert extra in extras(), f"{dockerfile.name} installs .[{extra}]"
        built.add(str(service["image"]))
    assert built == {"penny-api", "penny-worker-gpu", "penny-worker-cpu"}


def test_every_package_penny_installs_is_copied_into_the_images() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    packages = {p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"][
        "include"]}
    for dockerfile in (REPO / "docker").glob("*.Dockerfile"):
        copied = {args.split()[0] for kind, args in dockerfile_instructions(dockerfile)
                  if kind == "COPY" and not args.startswith("--from=")}
        assert packages <= copied, (dockerfile.name, sorted(packages - copied))


def test_each_worker_profile_serves_every_model_and_services_have_healthchecks(
    compose: dict[str, Any],
) -> None:
    served = set(Settings().served_models)
    for profile in ("gpu", "cpu"):
        models = {environment(service).get("PENNY_WORKER_MODEL")
                  for _, service in services(compose) if profile in service.get("profiles", [])}
        assert models == served, profile
    for name, service in services(compose):
        if service.get("restart") != "no":  # long-running, not a one-shot
            assert "healthcheck" in service, f"{name} has no healthcheck"
