"""The `penny` command."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Annotated

import typer

from penny.settings import Settings

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
models_app = typer.Typer(no_args_is_help=True, help="Prepare and list models.")
app.add_typer(models_app, name="models")
cache_app = typer.Typer(no_args_is_help=True,
                        help="Inspect and purge the exact result cache (in the database).")
app.add_typer(cache_app, name="cache")


def _logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@models_app.command("prepare")
def models_prepare(force: bool = False) -> None:
    """Build the offline default model (SmolLM2-135M-Instruct) into the models directory."""
    from workers.model_prep import prepare_offline_model

    settings = Settings()
    path = prepare_offline_model(settings.resolved_models_dir, force=force)
    typer.echo(f"offline model ready: {path}")


@models_app.command("list")
def models_list() -> None:
    """Show the served model names and where each one loads from."""
    settings = Settings()
    for name, source in settings.models.items():
        marker = " (default)" if name == settings.default_model else ""
        typer.echo(f"{name}{marker}\t{source}")
    for name, embedding in settings.embedding_models.items():
        marker = " (default embeddings)" if name == settings.default_embedding_model else ""
        typer.echo(f"{name}{marker}\t{embedding.source}\t{embedding.dimensions} dimensions")


TenantOption = Annotated[str | None, typer.Option(
    help="tenant name (the API key's tenant; 'default' without API keys, 'cli' for penny "
         "run); all tenants when left out")]


@cache_app.command("list")
def cache_list(tenant: TenantOption = None,
               limit: Annotated[int, typer.Option(min=1)] = 20) -> None:
    """The newest cache entries: id, tenant, model, hits, expiry, the start of the answer."""
    from penny.cache_cli import list_command

    list_command(Settings(), tenant, limit)


@cache_app.command("stats")
def cache_stats(tenant: TenantOption = None) -> None:
    """Entries, hits, misses and what the cache saved."""
    from penny.cache_cli import stats_command

    stats_command(Settings(), tenant)


@cache_app.command("purge")
def cache_purge(
    tenant: TenantOption = None,
    all_tenants: Annotated[bool, typer.Option("--all", help="purge every tenant's entries")
                           ] = False,
) -> None:
    """Delete a tenant's entries (or, with --all, everyone's); jobs then run again."""
    from penny.cache_cli import purge_command

    if (tenant is None) == (not all_tenants):
        raise typer.BadParameter("give --tenant NAME or --all")
    purge_command(Settings(), tenant)


@app.command()
def migrate() -> None:
    """Bring the database schema up to date."""
    from penny.runtime import open_runtime

    open_runtime(Settings()).close()
    typer.echo("database migrated")


@app.command()
def run(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    verbose: bool = False,
) -> None:
    """Process FILE (JSONL, or CSV with a 'prompt' column) end to end on the embedded
    default, then print where the results and ledger are and what it all cost."""
    _logging(verbose)
    from penny.batch_run import run_file

    started = time.perf_counter()
    summary = run_file(Settings(), file)
    summary.print(wall_seconds=time.perf_counter() - started)
    if summary.failed:
        raise typer.Exit(code=1)


@app.command()
def up(verbose: bool = False) -> None:
    """API + coalescer + one in-process worker per model, in this one process."""
    _logging(verbose)
    from penny.serve import serve_all_in_one

    serve_all_in_one(Settings())


@app.command()
def api(verbose: bool = False) -> None:
    """The API alone (distributed mode: coalescer and workers run elsewhere)."""
    _logging(verbose)
    from penny.serve import serve_api

    serve_api(Settings())


@app.command()
def coalescer(verbose: bool = False) -> None:
    """The coalescer (with batch validation and the sweeper), dispatching batches to workers
    through Redis."""
    _logging(verbose)
    from penny.serve import serve_coalescer

    serve_coalescer(Settings())


@app.command()
def worker(
    model: Annotated[str | None, typer.Option(help="served model name (chat or embedding)")
                     ] = None,
    verbose: bool = False,
) -> None:
    """One worker consuming its model's Redis queue: a vLLM engine for a chat model, a
    sentence-transformers embedder for an embedding model. Run one per GPU."""
    _logging(verbose)
    from workers.celery_app import run_worker

    settings = Settings()
    run_worker(settings, model or settings.default_model)


def main() -> None:
    app()
