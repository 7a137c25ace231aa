"""`rtml labels`: run the labels flow (the labelled table's one writer) now and print its counts."""

from __future__ import annotations

import typer

from rtml.infra.app.cli_support import CommandError, JsonOpt, emit, failure_reason, settings_of, table
from rtml.infra.app.progress import Display


def labels(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Ingest new labels and refresh the labelled table incrementally (Prefect flow rtml-labels)."""
    from rtml.flows.labels import labels_flow
    from rtml.infra.config.clients import prefect_api

    s = settings_of(ctx)
    overrides = getattr(ctx.obj, "overrides", None)
    config = getattr(ctx.obj, "config", None)
    with prefect_api(s), Display(as_json).busy("labels: Prefect flow rtml-labels"):
        state = labels_flow(
            config_file=str(config) if config else None, overrides=overrides, return_state=True
        )
    if state.is_failed():
        raise CommandError(f"labels flow failed: {failure_reason(state)}")
    result = {"ok": True, **state.result()}

    def render(r: dict) -> None:
        keys = ["new_labels", "new_scored", "labelled", "unlabelled_as_negative", "pending", "orphan_labels"]
        table("labels", ["", "events"], [[k.replace("_", " "), r.get(k, 0)] for k in keys])

    emit(result, as_json, render)
