"""`rtml shadow VERSION`: score a version beside the champion on live traffic, acting on nothing.

A plain function; :mod:`rtml.infra.app.cli` registers it on the app. ``rtml models`` shows the live
comparison (:func:`live_rows`, :func:`render_live`).
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from rtml.infra.app.cli_support import CommandError, JsonOpt, console, emit, settings_of, table


def shadow(
    ctx: typer.Context,
    version: Annotated[str | None, typer.Argument(help="Version to score beside the champion.")] = None,
    off: Annotated[bool, typer.Option("--off", help="Stop shadow scoring.")] = False,
    reason: Annotated[str, typer.Option(help="Why (recorded on the version).")] = "",
    as_json: JsonOpt = False,
) -> None:
    """Point @shadow at VERSION: the scoring job scores every micro-batch with it too, in the same pass,
    into the `shadow` table (its decisions are not acted on); `rtml models` compares it live with the
    champion as labels arrive. `--off` stops it."""
    from rtml.infra.config.spec import load_spec
    from rtml.models.lifecycle.audit import LifecycleError
    from rtml.models.lifecycle.shadow import clear_shadow, set_shadow

    s = settings_of(ctx)
    if off == (version is not None):
        raise CommandError("give a VERSION to shadow, or --off (not both)")
    try:
        result = clear_shadow(s, reason) if off else set_shadow(s, load_spec(s.spec), str(version), reason)
    except LifecycleError as exc:
        raise CommandError(str(exc)) from None

    def render(r: dict[str, Any]) -> None:
        was = f"v{r['previous_shadow']}" if r.get("previous_shadow") else "none"
        if r["shadow"]:
            console.print(
                f"@shadow -> v{r['shadow']} (was {was}): scored beside the champion from the next micro-batch"
            )
        else:
            console.print(f"@shadow removed (was {was})" if r.get("changed") else "no @shadow was set")

    emit({"ok": True, **result}, as_json, render)


def live_rows(settings: Any, versions: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The live comparison of the version holding @shadow (None when no version holds it)."""
    from rtml.infra.config.spec import load_spec
    from rtml.models.lifecycle.registry import SHADOW
    from rtml.pipelines.shadow import live_comparison

    held = next((v["version"] for v in versions if SHADOW in v.get("aliases", [])), None)
    return live_comparison(settings, load_spec(settings.spec), held) if held else None


def render_live(live: dict[str, Any] | None) -> None:
    if not live:
        return
    title = (
        f"shadow v{live['version']} vs champion, live on the same labelled events "
        f"({live.get('labelled', 0)} of {live.get('shadowed', 0)} shadow-scored, last {live['window']})"
    )
    if "shadow" not in live:
        console.print(title + ": no labels yet")
        return

    def f(x: Any) -> str:
        return "n/a" if x is None or x != x else f"{x:.3f}"

    champs = ",".join(f"v{v}" for v in live.get("champion_versions", []))
    table(
        title,
        ["metric", f"champion {champs}", f"shadow v{live['version']}", "delta"],
        [
            [m, f(live["champion"][m]), f(live["shadow"][m]), f(live["deltas"].get(m))]
            for m in ("precision", "recall", "f1")
        ],
    )
