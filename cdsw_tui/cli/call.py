"""call, sample, requests, openapi and metrics: the model as a caller meets it."""

from __future__ import annotations

import json

import click

from cdsw_tui.cli.common import (
    ensure_controller,
    json_option,
    raw_option,
    workbench,
)
from cdsw_tui.output import emit_json, table, table_row, untrusted
from cdsw_tui.services import builds, calls, logs, metrics, models, samples


@click.command("call")
@click.argument("ref", metavar="MODEL")
@click.argument("request_json", metavar="[JSON]", required=False)
@click.option("--api-key", help="for a model with authentication on (or CDSW_TUI_API_KEY)")
@click.pass_context
def call_cmd(ctx: click.Context, ref: str, request_json: str | None, api_key: str | None) -> None:
    """Call the model through the gateway (default: its example input)."""
    wb = workbench(ctx)
    model = models.resolve(wb, ref)
    # the gateway lives in the controller: start it as the mutating commands do (its
    # replicas outlive it and are adopted), then give it a moment to listen; something
    # else on the port is not started over (the check names it, and sends it nothing)
    patience = 0.0
    if not calls.gateway_listening(wb):
        patience = 15.0 if ensure_controller(wb) else 0.0
    result = calls.call(wb, model, request_json, api_key=api_key, patience=patience)
    click.echo(json.dumps(result.body))
    if not result.ok:
        ctx.exit(1)


@click.command("sample")
@click.argument("ref", metavar="MODEL")
@click.option(
    "--lang", type=click.Choice(["shell", "python", "r"]), default="shell", show_default=True
)
@click.pass_context
def sample_cmd(ctx: click.Context, ref: str, lang: str) -> None:
    """A sample call with the example input and the access key filled in."""
    wb = workbench(ctx)
    m = models.resolve(wb, ref)
    click.echo(samples.of_model(lang, wb.settings, m, m.access_key))


REQUEST_COLUMNS = ["time", "status", "code", "ms", "replica", "deployment", "bytes_in", "bytes_out"]
# so that followed calls line up under the table (a wider cell pushes its row right)
REQUEST_WIDTHS = dict(zip(REQUEST_COLUMNS, (24, 6, 24, 8, 22, 10, 8, 9), strict=True))


@click.command("requests")
@click.argument("ref", metavar="MODEL")
@click.option("--follow", "-f", is_flag=True, help="keep printing new calls")
@click.option("--tail", type=click.IntRange(1, 100_000), default=20, show_default=True)
@json_option
@raw_option
@click.pass_context
def requests_cmd(
    ctx: click.Context, ref: str, follow: bool, tail: int, as_json: bool, raw: bool
) -> None:
    """The gateway's recent calls of this model (no bodies), and their latency."""
    wb = workbench(ctx)
    model = models.resolve(wb, ref)
    records, offset = logs.recent_calls(wb, model, tail)
    if as_json and not follow:
        emit_json(records)
        return
    if as_json:
        for record in records:
            click.echo(json.dumps(record))
    else:
        table(records, REQUEST_COLUMNS, empty=f"{ref} has had no calls yet", raw=raw,
              widths=REQUEST_WIDTHS)  # fmt: skip
        figures = logs.latency(records)
        if figures["calls"]:
            click.echo(
                f"last minute: {figures['calls']} calls, p50 {figures['p50']} ms, "
                f"p95 {figures['p95']} ms, p99 {figures['p99']} ms"
            )
    if not follow:
        return
    try:
        for record in logs.follow_calls(wb, model, offset):
            if as_json:
                click.echo(json.dumps(record))
            else:
                untrusted(table_row(record, REQUEST_COLUMNS, REQUEST_WIDTHS), raw)
    except KeyboardInterrupt:
        pass


@click.command("openapi")
@click.argument("ref", metavar="MODEL")
@click.pass_context
def openapi_cmd(ctx: click.Context, ref: str) -> None:
    """An OpenAPI 3.1 description of the model's call (as the gateway serves it)."""
    wb = workbench(ctx)
    emit_json(models.openapi(wb, models.resolve(wb, ref)))


@click.command("metrics")
@click.argument("ref", metavar="MODEL")
@click.option("--deployment", "deployment_id", type=int, help="Only this deployment's.")
@click.option("--build", "build_number", type=int, help="Only this build's.")
@click.option("--start", "start_ms", type=int, help="From this time (ms since the epoch).")
@click.option("--end", "end_ms", type=int, help="Until this time (ms since the epoch).")
@json_option
@click.pass_context
def metrics_cmd(
    ctx: click.Context,
    ref: str,
    deployment_id: int | None,
    build_number: int | None,
    start_ms: int | None,
    end_ms: int | None,
    as_json: bool,
) -> None:
    """What the model tracked (cdsw/cml metrics API), oldest first: one record per call
    with metrics on, aggregates, and delayed metrics merged into their call."""
    wb = workbench(ctx)
    model = models.resolve(wb, ref)
    build_id = builds.get(wb, model, build_number).id if build_number is not None else None
    records = metrics.read(
        wb,
        model_id=model.id,
        deployment_id=deployment_id,
        build_id=build_id,
        start_ms=start_ms,
        end_ms=end_ms,
    )
    rows = [
        {
            "time": metrics.iso(r["startTimeStampMs"]),  # ISO, as every other listing
            "uuid": r["predictionUuid"],
            "deployment": metrics.ident(r["modelDeploymentCrn"]),
            "build": r["buildNumber"],
            "replica": r["replica"],
            "aggregate": r["aggregate"],
            "start_ms": r["startTimeStampMs"],
            "end_ms": r["endTimeStampMs"],
            "metrics": r["metrics"],
        }
        for r in records
    ]
    if as_json:
        emit_json(rows)
        return
    shown = [dict(r, metrics=json.dumps(r["metrics"])) for r in rows]  # JSON, not Python repr
    table(
        shown,
        ["time", "uuid", "deployment", "build", "metrics"],
        empty=f"{ref} has tracked no metrics",
    )
