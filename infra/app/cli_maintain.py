"""`rtml maintain`: run the maintenance flow (compaction, retention, vacuum) now and print its counts."""

from __future__ import annotations

from typing import Annotated

import typer

from rtml.infra.app.cli_support import CommandError, JsonOpt, emit, failure_reason, settings_of, table
from rtml.infra.app.progress import Display

DryRunOpt = Annotated[
    bool,
    typer.Option("--dry-run", help="Report what would be compacted, deleted, vacuumed; change nothing."),
]


def maintain(ctx: typer.Context, as_json: JsonOpt = False, dry_run: DryRunOpt = False) -> None:
    """Compact small files, apply retention, vacuum unreferenced files (Prefect flow rtml-maintain)."""
    from rtml.flows.maintain import maintain_flow
    from rtml.infra.config.clients import prefect_api

    s = settings_of(ctx)
    overrides = getattr(ctx.obj, "overrides", None)
    config = getattr(ctx.obj, "config", None)
    with prefect_api(s), Display(as_json).busy("maintain: Prefect flow rtml-maintain"):
        state = maintain_flow(
            config_file=str(config) if config else None,
            overrides=overrides,
            dry_run=dry_run,
            return_state=True,
        )
    if state.is_failed():
        raise CommandError(f"maintain flow failed: {failure_reason(state)}")
    result = {"ok": True, **state.result()}

    def render(r: dict) -> None:
        cols = [
            "table",
            "deleted before",
            "partitions deleted",
            "rows deleted",
            "files compacted",
            "files vacuumed",
        ]
        rows = [
            [
                t["table"],
                t.get("delete_before") or "-",
                t.get("partitions_deleted", 0),
                t.get("rows_deleted", 0),
                t.get("files_compacted", 0),
                t.get("files_vacuumed", 0) if not t.get("vacuum_skipped") else "skipped",
            ]
            for t in r["tables"]
        ]
        g = r["guard"]
        title = f"maintain{' (dry run)' if r['dry_run'] else ''}: kept from {g['keep_from']} ({g['by']})"
        table(title, cols, rows)
        for w in r["warnings"]:
            typer.secho(f"warning: {w}", fg=typer.colors.YELLOW, err=True)

    emit(result, as_json, render)
