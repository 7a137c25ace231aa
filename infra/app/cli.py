"""`rtml` command line: local stack, configuration, and the platform's jobs.

Run ``rtml --help``; every command takes ``--json``.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Annotated

import typer

from rtml.infra.app import (
    cli_compare,
    cli_explain,
    cli_jobs,
    cli_labels,
    cli_maintain,
    cli_quality,
    cli_shadow,
    output,
)
from rtml.infra.app.cli_support import GlobalOptions, JsonOpt, console, emit, run_app, settings_of, table
from rtml.infra.app.progress import Display
from rtml.infra.config.profile import PROFILES, read_profile
from rtml.infra.config.settings import ConfigError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="rtml: real-time ML on Kafka, Spark, MLflow and Prefect.",
)


@app.callback()
def _global(
    ctx: typer.Context,
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="YAML settings file (default rtml.yaml).")
    ] = None,
    state_dir: Annotated[Path | None, typer.Option(help="State directory (default .rtml).")] = None,
    bootstrap_servers: Annotated[str | None, typer.Option(help="External Kafka bootstrap servers.")] = None,
    tracking_uri: Annotated[str | None, typer.Option(help="External MLflow tracking URI.")] = None,
    prefect_api_url: Annotated[str | None, typer.Option(help="External Prefect API URL.")] = None,
    spec: Annotated[Path | None, typer.Option(help="Stream spec YAML (default: card transactions).")] = None,
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose",
            "-v",
            help="Show the libraries' INFO logs and warnings on stderr (always in the log).",
        ),
    ] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", help="Print the rtml version and exit.", is_eager=True, callback=_print_version
        ),
    ] = False,
) -> None:
    ctx.obj = GlobalOptions(
        config,
        {
            "state_dir": state_dir,
            "spec": spec,
            "kafka": {"bootstrap_servers": bootstrap_servers},
            "mlflow": {"tracking_uri": tracking_uri},
            "prefect": {"api_url": prefect_api_url},
        },
    )
    with contextlib.suppress(ConfigError):  # a bad config is reported by the command itself
        settings = ctx.obj.settings()
        output.log_to_file(settings.state_dir / "logs" / "cli.log")
        if settings.prefect.api_url is None:  # the embedded Prefect server runs with analytics off;
            os.environ.setdefault("DO_NOT_TRACK", "1")  # its clients send none and print no notice


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        console.print(f"rtml {version('rtml')}")
        raise typer.Exit(0)


def _render_services(result: dict) -> None:
    rows = []
    for name, s in result["services"].items():
        health = "[green]healthy[/]" if s.get("healthy") else "[red]down[/]"
        kind = "external" if s.get("external") else s.get("action", "managed" if s.get("managed") else "-")
        rows.append([name, s["url"], health, kind, s.get("pid")])
    table("rtml services", ["service", "url", "health", "", "pid"], rows)
    for s in result["services"].values():
        if s.get("error"):
            console.print(f"[red]{s['error']}[/]")
    if result.get("topics_created"):
        console.print(f"topics created: {', '.join(result['topics_created'])}")
    for topic, n in (result.get("topics_partitions_differ") or {}).items():
        console.print(
            f"[yellow]warning:[/] topic {topic} has {n} partitions, not kafka.partitions; it was not "
            "created by rtml (the scoring job reports partitions it does not know, and fails on lost ones)"
        )


@app.command()
def up(
    ctx: typer.Context,
    as_json: JsonOpt = False,
    timeout: Annotated[
        float | None,
        typer.Option(help="Seconds to wait for health (default 90; cluster: cluster.start_timeout_s)."),
    ] = None,
    profile: Annotated[
        str,
        typer.Option(
            help="local: broker, MLflow, Prefect. cluster: also a Spark standalone master + "
            "cluster.workers workers, PostgreSQL, MLflow and Prefect on it, all on free ports."
        ),
    ] = "local",
) -> None:
    """Start (or reuse) the local stack: broker, MLflow, Prefect; create topics; print URLs."""
    from rtml.infra.app import stack

    if timeout is not None and not timeout > 0:  # before anything starts (also refuses nan)
        raise typer.BadParameter(
            f"must be a positive number of seconds, got {timeout:g}", param_hint="--timeout"
        )
    if profile not in PROFILES:
        raise typer.BadParameter(f"one of {', '.join(PROFILES)}, got {profile!r}", param_hint="--profile")
    if profile == "cluster":
        from rtml.infra.app import cluster

        what = "Spark master + workers, PostgreSQL, MLflow, Prefect, broker"
        with Display(as_json).busy(f"starting the cluster profile ({what})"):
            result = cluster.up(settings_of(ctx), timeout_s=timeout)
    else:
        with Display(as_json).busy("starting the local stack (broker, MLflow, Prefect)"):
            result = stack.up(settings_of(ctx), timeout_s=timeout or 90.0)
    emit({"ok": True, **result}, as_json, _render_services)


@app.command()
def status(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Show each service with its URL and health (and a running profile's servers)."""
    from rtml.infra.app import cluster, stack

    settings = settings_of(ctx)
    result = stack.status(settings)
    result["services"] |= cluster.health(settings)
    result["profile"] = (read_profile(settings.state_dir) or {}).get("profile", "local")
    result["ok"] = all(s["healthy"] for s in result["services"].values())
    emit(result, as_json, _render_services)
    if not result["ok"]:
        raise typer.Exit(1)


@app.command()
def down(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Stop the processes that `rtml up` started (and nothing else)."""
    from rtml.infra.app import cluster, stack

    settings = settings_of(ctx)
    with Display(as_json).busy("stopping the local stack"):
        result = stack.down(settings)
        more = cluster.down(settings)  # a profile's servers, PostgreSQL after the servers on it
    result = {k: {**result[k], **more[k]} for k in ("stopped", "not_ours")}
    emit(
        {"ok": True, **result},
        as_json,
        lambda r: console.print(
            f"stopped: {', '.join(r['stopped']) or 'nothing was running'}"
            + "".join(
                f"\nnot stopped: {name} (pid {pid} now belongs to another process)"
                for name, pid in r["not_ours"].items()
            )
        ),
    )


@app.command("config")
def show_config(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Print the effective settings (secrets masked) and stream spec summary."""
    from rtml.infra.config.spec import load_spec

    s = settings_of(ctx)
    spec = load_spec(s.spec)
    result = {
        "ok": True,
        "settings": s.public_dict(),
        "endpoints": {"kafka": s.kafka_bootstrap, "mlflow": s.tracking_uri, "prefect": s.prefect_api_url},
        "spec": {"name": spec.name, "task": spec.task, "features": [f.name for f in spec.features]},
    }
    emit(result, as_json)


@app.command()
def smoke(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Round trip through every service: Kafka produce/consume, MLflow log+load, Prefect flow run."""
    from rtml.infra.app.smoke import run_smoke

    result = run_smoke(settings_of(ctx))
    emit(
        result,
        as_json,
        lambda r: table(
            "smoke",
            ["check", "ok", "detail"],
            [[k, v["ok"], v.get("detail", "")] for k, v in r["checks"].items()],
        ),
    )
    if not result["ok"]:
        raise typer.Exit(1)


@app.command()
def demo(
    ctx: typer.Context,
    events: Annotated[int, typer.Option(min=2000, help="Events per round (two rounds).")] = 24_000,
    rate: Annotated[float, typer.Option(min=100, help="Events per second.")] = 2_000,
    keep_running: Annotated[
        bool, typer.Option(help="Leave the local stack up afterwards to browse the UIs.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Bring up the local stack, run the end-to-end demo, print a summary and the UI URLs."""
    from rtml.infra.app.demo import run_demo

    result = run_demo(
        settings_of(ctx),
        progress=not as_json,
        events=events,
        drift_at=events // 3,
        rate=rate,
        keep_running=keep_running,
    )
    emit(result, as_json, _render_demo)
    if not result["ok"]:
        raise typer.Exit(1)


def _render_demo(result: dict) -> None:
    for title, rows in result.get("tables", {}).items():
        table(title, ["", "value"], [[k, v] for k, v in rows.items()])
    if result["drift_alerts"]:
        table(
            "drift alerts (one per model version, feature and kind)",
            ["check", "model", "kind", "feature", "statistic", "value", "severity"],
            [
                [
                    a["check"],
                    f"v{a['champion']}",
                    a["kind"],
                    a["feature"],
                    a["statistic"],
                    f"{a['value']:.3g}",
                    a["severity"],
                ]
                for a in result["drift_alerts"]
            ],
        )
    table(
        "deployments",
        ["deployment", "schedule"],
        [
            [d["deployment"], ", ".join(d["schedules"]) or "by hand / rtml serve"]
            for d in result["deployments"]
        ],
    )
    if result["stopped"]:
        console.print(
            f"stopped what the demo started ({', '.join(result['stopped'])}); "
            "run [bold]rtml demo --keep-running[/] (or [bold]rtml up[/]) to browse the UIs:"
        )
    console.print("[bold]MLflow UI:[/]  " + result["urls"]["mlflow"])
    console.print("[bold]Prefect UI:[/] " + result["urls"]["prefect"])
    if not result["stopped"]:
        console.print("Stop the stack with [bold]rtml down[/] (or `make clean-state`).")


# The commands of the other CLI modules, registered explicitly (no import for side effects).
for _command in (
    cli_jobs.produce,
    cli_jobs.replay,
    cli_jobs.bootstrap,
    cli_jobs.score,
    cli_jobs.models,
    cli_compare.compare,
    cli_explain.explain,
    cli_jobs.promote,
    cli_jobs.rollback,
    cli_shadow.shadow,
    cli_labels.labels,
    cli_maintain.maintain,
    cli_jobs.retrain,
    cli_jobs.deploy,
    cli_jobs.serve,
    cli_quality.validate,
    cli_quality.expectations,
    cli_quality.drift,
    cli_quality.alerting,
):
    app.command()(_command)


def main() -> None:
    """Console-script entry point: the output is configured before any library is imported."""
    import sys

    output.configure(verbose=bool({"-v", "--verbose"} & set(sys.argv[1:])))
    run_app(app)


if __name__ == "__main__":
    main()
