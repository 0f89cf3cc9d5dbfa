"""docs/configuration.md is generated from the Settings object: it fails here when the
two disagree (regenerate with `make docs`), and every setting must say what it does."""

from __future__ import annotations

from decimal import Decimal

import pytest
from typer.testing import CliRunner

from penny.cli import app
from penny.config_reference import render
from penny.settings import Budget, ModelPrice, Settings
from tests.support import REPO

REFERENCE = REPO / "docs" / "configuration.md"


def test_the_committed_reference_matches_the_settings() -> None:
    assert REFERENCE.read_text() == render(), (
        "docs/configuration.md is stale: run `penny config-reference --output "
        "docs/configuration.md` (make docs)")


def test_every_setting_is_described_and_listed() -> None:
    reference = render()
    for model in (Settings, ModelPrice, Budget):
        undescribed = [name for name, f in model.model_fields.items() if not f.description]
        assert undescribed == [], f"{model.__name__}: say what these do: {undescribed}"
    for name in Settings.model_fields:
        assert f"| `PENNY_{name.upper()}` |" in reference


def test_the_reference_does_not_depend_on_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    expected = render()
    monkeypatch.setenv("PENNY_API_PORT", "9999")
    monkeypatch.setenv("XDG_DATA_HOME", "/elsewhere")
    assert render() == expected
    assert "9999" not in expected and "/elsewhere" not in expected


def test_the_cli_prints_the_same_reference() -> None:
    result = CliRunner().invoke(app, ["config-reference"])
    assert result.exit_code == 0, result.output
    assert result.output == render()


def test_a_nested_field_is_set_alone_as_the_reference_says(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert "`PENNY_DEFAULT_PRICE__ENGINE_HOUR_USD=1.20`" in render()
    monkeypatch.setenv("PENNY_DEFAULT_PRICE__ENGINE_HOUR_USD", "1.20")
    price = Settings().default_price
    assert price.engine_hour_usd == Decimal("1.20")
    assert price.list_output_usd_per_mtok == ModelPrice().list_output_usd_per_mtok
