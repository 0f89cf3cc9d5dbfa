"""`penny calibrate MODEL` and `penny calibrations`: measuring a model's engine speed for
the ledger's counterfactual, and listing what was measured."""

from __future__ import annotations

import logging
import sys
from decimal import Decimal

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy.orm import Session, sessionmaker

from ledger.cost_model import Calibration
from models.costing import latest_calibration, list_calibrations, store_calibration
from penny.runtime import open_runtime
from penny.settings import Settings
from workers.engine import Engine

log = logging.getLogger(__name__)


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def calibrate(engine: Engine, settings: Settings, sessions: sessionmaker[Session]
              ) -> Calibration:
    """Run the probe on `engine` within the budget, printing progress on stderr, and store
    the result as its model's next version. Raises `CalibrationSkipped` when the probe
    could not finish within the budget (nothing stored)."""
    from workers.calibration_probe import run_probe

    speed = run_probe(engine, settings, progress=_progress)
    with sessions() as session:
        stored = store_calibration(session, engine.model_name, speed)
    _progress(f"calibrated {engine.model_name} in {speed.machine['probe_seconds']} s: the "
              f"fit reproduces each probe shape's seconds within "
              f"{speed.machine['fit_error']:.0%}")
    return stored


def calibrate_if_missing(engine: Engine, settings: Settings,
                         sessions: sessionmaker[Session]) -> Calibration | None:
    """`penny run`'s first use of a model: calibrate it once so its ledger can show what
    penny saved. Returns the new calibration, or None when one existed or it is off."""
    if not settings.auto_calibrate:
        return None
    with sessions() as session:
        if latest_calibration(session, engine.model_name) is not None:
            return None
    from workers.calibration_probe import CalibrationSkipped

    log.info("calibrating %s once for the ledger's counterfactual", engine.model_name)
    try:
        return calibrate(engine, settings, sessions)
    except CalibrationSkipped as skipped:
        # The run goes on: its rows claim no saving, as for a model with no calibration.
        _progress(f"{engine.model_name}: {skipped.message} This run's ledger claims no "
                  "saving for it.")
        return None


def _speeds(table: Table) -> None:
    for column in ("overhead ms", "prefill ms/token", "decode ms/token alone",
                   "decode ms/token full batch", "full batch",
                   "decode ms/token per 1k context"):
        table.add_column(column, justify="right")


def _per_1k_context(seconds: Decimal | float | None) -> str:
    """Decode seconds per token of context as milliseconds per output token for every
    1,000 tokens of context ("-": measured before the probe separated it)."""
    if seconds is None:
        return "-"
    return f"{float(seconds) * 1e6:.2f}"


def calibrate_command(settings: Settings, model: str) -> None:
    if model not in settings.models:
        raise typer.BadParameter(
            f"{model!r} is not a chat model penny serves ({', '.join(settings.models)})",
            param_hint="MODEL")
    from workers.calibration_probe import CalibrationSkipped, ProbeBudget
    from workers.vllm_engine import VllmEngine

    try:
        # No budget at all: say so before starting an engine for nothing.
        ProbeBudget(settings.calibration_budget_seconds).check("the probe", 0.0)
        runtime = open_runtime(settings)
        try:
            engine = VllmEngine(settings, model)
            stored = calibrate(engine, settings, runtime.sessions)
        finally:
            runtime.close()
    except CalibrationSkipped as skipped:
        _progress(f"{model}: {skipped.message}")
        raise typer.Exit(1) from None
    table = Table(title=f"calibration of {model} (id {stored.id})")
    _speeds(table)
    table.add_row(f"{stored.request_overhead_s * 1000:.2f}",
                  f"{stored.prefill_s_per_token * 1000:.4f}",
                  f"{stored.decode_s_per_token_bs1 * 1000:.3f}",
                  f"{stored.decode_s_per_token_full * 1000:.3f}",
                  str(stored.full_batch_jobs),
                  _per_1k_context(stored.decode_s_per_context_token))
    Console().print(table)


def calibrations_command(settings: Settings, model: str | None) -> None:
    runtime = open_runtime(settings)
    try:
        with runtime.sessions() as session:
            found = list_calibrations(session, model)
    finally:
        runtime.close()
    table = Table(title="calibrations (newest first)")
    for column in ("id", "model", "version", "measured at"):
        table.add_column(column)
    _speeds(table)
    table.add_column("cpus / load")
    for c in found:
        table.add_row(str(c.id), c.model, str(c.version), f"{c.created_at:%Y-%m-%d %H:%M}",
                      f"{c.request_overhead_s * 1000:.2f}",
                      f"{c.prefill_s_per_token * 1000:.4f}",
                      f"{c.decode_s_per_token_bs1 * 1000:.3f}",
                      f"{c.decode_s_per_token_full * 1000:.3f}", str(c.full_batch_jobs),
                      _per_1k_context(c.decode_s_per_context_token),
                      f"{c.machine.get('cpus')} / {c.machine.get('load_average_1m')}")
    Console().print(table)
