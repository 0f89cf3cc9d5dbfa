"""docs/cost-playbook.md names settings, ledger columns and metrics: every one must exist,
so the page cannot drift from the code it describes."""

from __future__ import annotations

import re

from prometheus_client import REGISTRY

import observability.metrics  # noqa: F401  (registers every metric penny exports)
from intake.cache_option import PENNY_CACHE_FIELD
from intake.compress_option import PENNY_COMPRESS_FIELD
from models.tables import LedgerEntry
from penny.settings import Settings
from tests.support import REPO

PLAYBOOK = REPO / "docs" / "cost-playbook.md"
# Fields of penny's wire format that share the metrics' prefix: the cost object on batch
# objects, output lines and webhooks, and the cache option of hosted-API lines.
WIRE_FIELDS = {"penny_cost", PENNY_CACHE_FIELD, PENNY_COMPRESS_FIELD}


def _page() -> str:
    return PLAYBOOK.read_text()


def test_every_setting_the_playbook_names_exists() -> None:
    named = set(re.findall(r"\bPENNY_[A-Z0-9_]+\b", _page()))
    settings = {f"PENNY_{name.upper()}" for name in Settings.model_fields}
    assert named, "the playbook names no setting"
    assert sorted(named - settings) == []


def test_every_ledger_column_the_playbook_names_exists() -> None:
    named = set(re.findall(r"\bledger_entries\.([a-z0-9_]+)", _page()))
    columns = {column.name for column in LedgerEntry.__table__.columns}
    assert {"cost_usd", "naive_cost_usd", "saving_prefix_cache_usd"} <= named
    assert sorted(named - columns) == []


def test_every_metric_the_playbook_names_is_exported() -> None:
    named = set(re.findall(r"`(penny_[a-z0-9_]+)`", _page())) - WIRE_FIELDS
    exported = {family.name for family in REGISTRY.collect()}
    assert named, "the playbook names no metric"
    assert sorted(named - exported) == []


def test_every_saving_column_has_a_lever_on_the_page() -> None:
    savings = {column.name for column in LedgerEntry.__table__.columns
               if column.name.startswith("saving_")}
    assert sorted(c for c in savings if f"ledger_entries.{c}" not in _page()) == []


def test_the_readme_links_the_playbook() -> None:
    assert "docs/cost-playbook.md" in (REPO / "README.md").read_text()
