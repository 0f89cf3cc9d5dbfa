"""The `penny` command."""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from penny.errors import MissingCapability, UnsafeBinding
from penny.key_commands import keys_app
from penny.remote import PennyClient, RemoteError
from penny.report_commands import report_app
from penny.settings import Settings

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
models_app = typer.Typer(no_args_is_help=True, help="Prepare and list models.")
app.add_typer(models_app, name="models")
cache_app = typer.Typer(no_args_is_help=True,
                        help="Inspect and purge the exact result cache (in the database).")
app.add_typer(cache_app, name="cache")
app.add_typer(keys_app, name="keys")
app.add_typer(report_app, name="report")


class LogFormatName(StrEnum):
    TEXT = "text"
    JSON = "json"


LogFormat = Annotated[LogFormatName | None, typer.Option(
    help="Log lines for people (text) or one JSON object per line. "
         "Default: PENNY_LOG_FORMAT, else text.")]


def _logging(settings: Settings, verbose: bool, role: str, **fields: str) -> None:
    from observability.logs import configure_logging

    configure_logging(settings.log_format, verbose=verbose, role=role, **fields)


@models_app.command("prepare")
def models_prepare(force: bool = False, pruned: bool = False, gemma: bool = False) -> None:
    """Build the offline default model (SmolLM2-135M-Instruct) into the models directory;
    with --pruned, also its copy with 4 of 30 layers removed (a cheaper, worse tier); with
    --gemma, also the Gemma 3 270M base model (not instruction-tuned; a larger tier)."""
    from workers.gemma_prep import prepare_gemma_model
    from workers.model_prep import prepare_offline_model, prepare_pruned_model

    settings = Settings()
    path = prepare_offline_model(settings.resolved_models_dir, force=force)
    typer.echo(f"offline model ready: {path}")
    if pruned:
        path = prepare_pruned_model(settings.resolved_models_dir, force=force)
        typer.echo(f"pruned offline model ready: {path}")
    if gemma:
        path = prepare_gemma_model(settings.resolved_models_dir, force=force)
        typer.echo(f"Gemma 3 270M base model ready: {path}")


@models_app.command("list")
def models_list() -> None:
    """Show the served model names and where each one loads from."""
    settings = Settings()
    for name, source in settings.models.items():
        marker = " (default)" if name == settings.default_model else ""
        if name in settings.tiers:
            marker += f" (tier {settings.tiers.index(name) + 1} of {len(settings.tiers)})"
        label = settings.labelled_models.get(name)
        typer.echo(f"{name}{marker}\t{source}" + (f"\t{label}" if label else ""))
    for name, embedding in settings.embedding_models.items():
        marker = " (default embeddings)" if name == settings.default_embedding_model else ""
        typer.echo(f"{name}{marker}\t{embedding.source}\t{embedding.dimensions} dimensions")


TenantOption = Annotated[str | None, typer.Option(
    help="tenant name (the API key's tenant; 'default' without API keys, 'cli' for penny "
         "run); all tenants when left out")]


SemanticOption = Annotated[bool, typer.Option(
    "--semantic", help="the semantic cache's entries instead of the exact cache's")]


@cache_app.command("list")
def cache_list(tenant: TenantOption = None,
               limit: Annotated[int, typer.Option(min=1)] = 20,
               semantic: SemanticOption = False) -> None:
    """The newest cache entries: id, tenant, model, hits, expiry, the start of the answer
    (with --semantic: the semantic cache's, with their questions)."""
    from penny.cache_cli import list_command, list_semantic_command

    if semantic:
        list_semantic_command(Settings(), tenant, limit)
    else:
        list_command(Settings(), tenant, limit)


@cache_app.command("correct")
def cache_correct(
    entry_id: Annotated[str, typer.Argument(help="an exact or semantic entry's id")],
    answer: Annotated[str, typer.Argument(help="the corrected answer")],
) -> None:
    """Replace a cached answer; the corrected answer is served from then on."""
    from penny.cache_cli import correct_command

    correct_command(Settings(), entry_id, answer)


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
    """Delete a tenant's entries (or, with --all, everyone's), exact and semantic; jobs
    then run again."""
    from penny.cache_cli import purge_command

    if (tenant is None) == (not all_tenants):
        raise typer.BadParameter("give --tenant NAME or --all")
    purge_command(Settings(), tenant)


# The options `calibrate-cascade` and `train-router` share: both read the same labelled set.
TargetAccuracy = Annotated[float, typer.Option(min=0.0, max=1.0,
                                               help="the accuracy to reach (a fraction)")]
SmallTierCost = Annotated[float | None, typer.Option(
    help="the small tier's cost per item; default: the lines' mean")]
LargeTierCost = Annotated[float | None, typer.Option(
    help="the large tier's cost per item; default: the lines' mean")]


@app.command("calibrate-cascade")
def calibrate_cascade(
    labelled: Annotated[Path, typer.Argument(help="JSON lines: mean_logprob, finish_reason, "
                                                  "small_correct, large_correct[, "
                                                  "small_cost_usd, large_cost_usd]")],
    target: TargetAccuracy = 0.9,
    small_cost: SmallTierCost = None,
    large_cost: LargeTierCost = None,
) -> None:
    """Pick the cascade's mean-logprob threshold from a labelled set: the cheapest that
    reaches --target accuracy (or, if none does, the most accurate)."""
    from penny.router_cli import read_labelled
    from routing.calibration import calibrate

    labelled_set, small, large = read_labelled(labelled, small_cost, large_cost)
    best = calibrate(labelled_set.outcomes, target, small_cost=small, large_cost=large)
    reached = "reaches" if best.accuracy >= target else "does NOT reach"
    typer.echo(f"{len(labelled_set.outcomes)} labelled items; the best threshold {reached} "
               f"{target:.1%}: accuracy {best.accuracy:.1%}, escalation rate "
               f"{best.escalation_rate:.1%}, cost {best.relative_cost:.2f}x large-only")
    typer.echo(f"PENNY_CASCADE_MIN_MEAN_LOGPROB={best.policy.min_mean_logprob:.4f}")


@app.command("train-router")
def train_router(
    labelled: Annotated[Path, typer.Argument(help="JSON lines as for calibrate-cascade, "
                                                  "each with its `prompt`")],
    target: TargetAccuracy = 0.9,
    small_cost: SmallTierCost = None,
    large_cost: LargeTierCost = None,
) -> None:
    """Fit the router's classifier (a logistic regression on the prompt's embedding) on a
    labelled set, pick its threshold for --target accuracy on held-out folds, and store it
    as the next version: `auto` consults it with PENNY_ROUTER_CLASSIFIER=true."""
    from penny.router_cli import train_router_command

    train_router_command(Settings(), labelled, target, small_cost, large_cost)


@app.command("config-reference")
def config_reference(
    output: Annotated[Path | None, typer.Option(
        help="Write it to this file (docs/configuration.md) instead of stdout.")] = None,
) -> None:
    """Print the configuration reference: every PENNY_* setting with its type, default
    and what it does, generated from the settings themselves."""
    from penny.config_reference import render

    text = render()
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text)
        typer.echo(f"wrote {output}")


@app.command()
def migrate() -> None:
    """Bring the database schema up to date."""
    from penny.runtime import open_runtime

    open_runtime(Settings()).close()
    typer.echo("database migrated")


@app.command()
def calibrate(
    model: Annotated[str, typer.Argument(help="a chat model penny serves")],
    verbose: bool = False,
) -> None:
    """Measure MODEL's engine speed on a short, fixed probe (some seconds on the real
    engine) and store it as the model's next calibration: the ledger's counterfactual and
    savings by mechanism are modelled from the latest one."""
    settings = Settings()
    _logging(settings, verbose, "calibrate")
    from penny.calibration_cli import calibrate_command

    calibrate_command(settings, model)


@app.command()
def calibrations(
    model: Annotated[str | None, typer.Option(help="only this model's")] = None,
) -> None:
    """Every stored calibration, newest first, with the machine it was measured on."""
    from penny.calibration_cli import calibrations_command

    calibrations_command(Settings(), model)


# The CSV options `penny run` and `penny submit` share.
Template = Annotated[str | None, typer.Option(
    help="CSV: build each prompt from columns, e.g. 'Summarise: {body}' (instead of a "
         "'prompt' column).")]
IdColumn = Annotated[str | None, typer.Option(
    help="CSV: the column holding each row's custom_id (default: 'custom_id').")]
Encoding = Annotated[str | None, typer.Option(
    help="CSV: the file's encoding when it is not UTF-8, e.g. latin-1 or utf-16.")]
SkipBadRows = Annotated[bool, typer.Option(
    help="CSV: run the good rows and report each bad one as a failed job naming its "
         "line (default: a file with bad rows is rejected whole).")]


@app.command()
def run(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    verbose: bool = False,
    log_format: LogFormat = None,
    template: Template = None,
    id_column: IdColumn = None,
    encoding: Encoding = None,
    skip_bad_rows: SkipBadRows = False,
) -> None:
    """Process FILE (JSONL, or CSV with a 'prompt' column) end to end on the embedded
    default, then print where the results and ledger are and what it all cost."""
    settings = _settings(log_format=log_format)
    _logging(settings, verbose, "run")
    from intake.csv_mapping import CsvOptions
    from penny.batch_run import run_file
    from penny.errors import PennyError

    started = time.perf_counter()
    options = CsvOptions(template=template, id_column=id_column, encoding=encoding,
                         skip_bad_rows=skip_bad_rows)
    try:
        summary = run_file(settings, file, options)
    except PennyError as error:  # the whole file is unusable: say why, no traceback
        typer.echo(f"penny run: {error.message}", err=True)
        for detail in error.details:
            typer.echo(f"  {detail.get('message', detail)}", err=True)
        raise typer.Exit(code=2) from None
    summary.print(wall_seconds=time.perf_counter() - started)
    if summary.failed:
        raise typer.Exit(code=1)


# uvicorn's own option names and help; the defaults come from the settings.
Host = Annotated[str | None, typer.Option(
    help="Bind socket to this host. Default: PENNY_API_HOST, else 127.0.0.1.")]
Port = Annotated[int | None, typer.Option(
    help="Bind socket to this port. If 0, an available port will be picked. "
         "Default: PENNY_API_PORT, else 8000.")]


def _settings(**overrides: object) -> Settings:
    """The settings from the environment, with the options given on the command line
    taking precedence (validated like the environment's values)."""
    given = {name: value.value if isinstance(value, StrEnum) else value
             for name, value in overrides.items() if value is not None}
    if not given:
        return Settings()
    return Settings.model_validate({**Settings().model_dump(), **given})


def _serve_unless_unsafe(command: str, serve: Callable[[Settings], None],
                         settings: Settings) -> None:
    """Run a listening role; refusing to listen openly without keys is a message and exit
    code 2, not a traceback."""
    from observability.tracing import configure_tracing

    try:
        configure_tracing(settings, command)
        serve(settings)
    except (UnsafeBinding, MissingCapability) as error:
        typer.echo(f"penny {command}: {error.message}", err=True)
        raise typer.Exit(code=2) from None


@app.command()
def up(host: Host = None, port: Port = None, verbose: bool = False,
       log_format: LogFormat = None) -> None:
    """API + coalescer + one in-process worker per model, in this one process."""
    settings = _settings(api_host=host, api_port=port, log_format=log_format)
    _logging(settings, verbose, "up")
    from penny.serve import serve_all_in_one

    _serve_unless_unsafe("up", serve_all_in_one, settings)


Workers = Annotated[int | None, typer.Option(
    help="Worker processes. Default: PENNY_API_WORKERS, else one per CPU core.")]


@app.command()
def api(host: Host = None, port: Port = None, workers: Workers = None, verbose: bool = False,
        log_format: LogFormat = None) -> None:
    """The API alone (distributed mode: coalescer and workers run elsewhere)."""
    settings = _settings(api_host=host, api_port=port, api_workers=workers,
                         log_format=log_format)
    _logging(settings, verbose, "api")
    from penny.serve import serve_api

    _serve_unless_unsafe("api", serve_api, settings)


MetricsPort = Annotated[int | None, typer.Option(
    help="Serve this process's Prometheus metrics on this port. Default: "
         "PENNY_METRICS_PORT, else none (the API's /metrics has them when every process "
         "shares PROMETHEUS_MULTIPROC_DIR).")]


@app.command()
def coalescer(metrics_port: MetricsPort = None, verbose: bool = False,
              log_format: LogFormat = None) -> None:
    """The coalescer (with batch validation and the sweeper), dispatching batches to workers
    through Redis."""
    settings = _settings(metrics_port=metrics_port, log_format=log_format)
    _logging(settings, verbose, "coalescer")
    from observability.metrics import serve_metrics
    from penny.serve import serve_coalescer

    serve_metrics(settings.metrics_port, settings.metrics_host)
    _serve_unless_unsafe("coalescer", serve_coalescer, settings)


@app.command()
def worker(
    model: Annotated[str | None, typer.Option(
        help="Served model name (chat or embedding). Default: PENNY_WORKER_MODEL, else "
             "PENNY_DEFAULT_MODEL.")] = None,
    metrics_port: MetricsPort = None,
    verbose: bool = False,
    log_format: LogFormat = None,
) -> None:
    """One worker consuming its model's Redis queue: a vLLM engine for a chat model, a
    sentence-transformers embedder for an embedding model. Run one per GPU."""
    settings = _settings(metrics_port=metrics_port, log_format=log_format)
    served = model or settings.worker_model or settings.default_model
    _logging(settings, verbose, "worker", model=served)
    from observability.metrics import serve_metrics
    from workers.celery_app import run_worker

    serve_metrics(settings.metrics_port, settings.metrics_host)
    _serve_unless_unsafe("worker", lambda s: run_worker(s, served), settings)


# Talking to a running server.
ServerUrl = Annotated[str | None, typer.Option(
    "--url", help="The penny server. Default: http://PENNY_API_HOST:PENNY_API_PORT.")]
ApiKey = Annotated[str | None, typer.Option(help="Your API key, if the server wants one.")]
SubmissionId = Annotated[str, typer.Argument(
    help="A submission id, or an OpenAI batch id (batch_...), as `penny submit` printed.")]


def _client(url: str | None, api_key: str | None) -> PennyClient:
    settings = Settings()
    return PennyClient(url or f"http://{settings.api_host}:{settings.api_port}", api_key)


def _fail(error: RemoteError) -> typer.Exit:
    typer.echo(f"error: {error}", err=True)
    return typer.Exit(code=2)


@app.command()
def submit(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    url: ServerUrl = None, api_key: ApiKey = None,
    watch: Annotated[bool, typer.Option(help="Then follow it like `penny watch`.")] = False,
    template: Template = None, id_column: IdColumn = None, encoding: Encoding = None,
    skip_bad_rows: SkipBadRows = False,
) -> None:
    """Send FILE to a running server: a CSV (*.csv) is streamed to the server, which
    checks every row (bad rows are listed and nothing is queued, unless
    --skip-bad-rows); JSONL of penny jobs is checked here first (all or nothing); an
    OpenAI batch file becomes a batch. Prints the id that `status`, `watch` and
    `results` take."""
    from intake.csv_mapping import CsvOptions

    options = CsvOptions(template=template, id_column=id_column, encoding=encoding,
                         skip_bad_rows=skip_bad_rows)
    with _client(url, api_key) as client:
        try:
            submitted = client.submit_file(file, options)
        except RemoteError as error:
            raise _fail(error) from None
        bad = f", {submitted.bad_rows} bad rows as failed jobs" if submitted.bad_rows else ""
        typer.echo(f"{submitted.id}\t{submitted.jobs} jobs ({submitted.kind}{bad})")
        if watch:
            _watch(client, submitted.id)


@app.command()
def status(submission: SubmissionId, url: ServerUrl = None, api_key: ApiKey = None) -> None:
    """One line: state, jobs finished and failed, tokens, cost and savings so far."""
    from penny.watch_view import summary_line

    with _client(url, api_key) as client:
        try:
            typer.echo(summary_line(client.snapshot(submission)))
        except RemoteError as error:
            raise _fail(error) from None


def _watch(client: PennyClient, submission: str) -> None:
    from rich.console import Console

    from penny.watch_view import watch as watch_submission

    try:
        final = watch_submission(client, submission, Console(stderr=True))
    except RemoteError as error:
        raise _fail(error) from None
    if final.failed_jobs or final.status == "failed":
        raise typer.Exit(code=1)


@app.command()
def watch(submission: SubmissionId, url: ServerUrl = None, api_key: ApiKey = None) -> None:
    """A live progress bar until the submission finishes: jobs done and failed, output
    tokens/s, running cost and savings, time left. Exits 1 if any job failed."""
    with _client(url, api_key) as client:
        _watch(client, submission)


@app.command()
def results(
    submission: SubmissionId, url: ServerUrl = None, api_key: ApiKey = None,
    output: Annotated[Path | None, typer.Option(help="Write to this file, not stdout.")
                      ] = None,
    ledger: Annotated[str | None, typer.Option(
        help="The ledger instead of the results: json or csv.")] = None,
) -> None:
    """A finished submission's results (JSONL, one line per job) or its cost ledger."""
    name = {None: "results", "json": "ledger_json", "csv": "ledger_csv"}.get(ledger)
    if name is None:
        typer.echo("error: --ledger takes json or csv", err=True)
        raise typer.Exit(code=2)
    with _client(url, api_key) as client:
        try:
            data = client.output(submission, name)
        except RemoteError as error:
            raise _fail(error) from None
    if output is None:
        typer.echo(data.decode(), nl=False)
    else:
        output.write_bytes(data)
        typer.echo(f"wrote {output}", err=True)


def main() -> None:
    app()
