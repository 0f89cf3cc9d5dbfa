"""`penny watch`: a live progress bar for a submission on a running server — jobs done
and failed, output tokens per second, running cost and savings, time left."""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from penny.remote import PennyClient, Snapshot


def summary_line(snapshot: Snapshot) -> str:
    cost = snapshot.cost
    fraction = cost.get("saved_vs_naive_fraction")
    share = f" ({fraction:.0%})" if isinstance(fraction, float) else ""
    versus = f"saved ${snapshot.saved_usd}{share} vs the naive way"
    return (f"{snapshot.status}: {snapshot.finished_jobs}/{snapshot.total} jobs finished, "
            f"{snapshot.failed_jobs} failed; {cost.get('input_tokens', 0)} input tokens "
            f"({cost.get('cached_tokens', 0)} cached), {cost.get('output_tokens', 0)} output "
            f"tokens, {cost.get('engine_seconds', 0)} engine s; cost ${snapshot.cost_usd}, "
            f"{versus}")


class _Rate:
    """Output tokens per wall second since the watch began."""

    def __init__(self) -> None:
        self._start: tuple[float, int] | None = None

    def update(self, output_tokens: int) -> float:
        now = time.monotonic()
        if self._start is None:
            self._start = (now, output_tokens)
        started, first = self._start
        return (output_tokens - first) / (now - started) if now > started else 0.0


def watch(client: PennyClient, submission: str, console: Console,
          interval: float = 1.0) -> Snapshot:
    rate = _Rate()
    columns = (
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("failed {task.fields[failed]}"),
        TextColumn("{task.fields[rate]:.1f} tok/s"),
        TextColumn("${task.fields[cost]} (saved ${task.fields[saved]})"),
        TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
    )
    with Progress(*columns, console=console) as progress:
        task = progress.add_task(submission, total=None, failed=0, rate=0.0, cost="0",
                                 saved="0")

        def show(snapshot: Snapshot) -> None:
            progress.update(
                task, total=snapshot.total or None, completed=snapshot.finished_jobs,
                description=f"{submission} {snapshot.status}", failed=snapshot.failed_jobs,
                rate=rate.update(int(snapshot.cost.get("output_tokens", 0))),
                cost=f"{snapshot.cost_usd:.6f}", saved=f"{snapshot.saved_usd:.6f}")

        final = client.wait(submission, show, interval)
    console.print(summary_line(final))
    return final
