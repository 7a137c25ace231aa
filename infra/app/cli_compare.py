"""`rtml compare A B`: two registered versions side by side.

A plain function; :mod:`rtml.infra.app.cli` registers it on the app.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from rtml.infra.app.cli_support import CommandError, JsonOpt, console, emit, settings_of, table


def _f(x: Any, fmt: str = ".3f") -> str:
    return "" if x is None else format(x, fmt)


def _render(r: dict[str, Any]) -> None:
    a, b = r["versions"]
    table(
        f"{r['model']}: v{a['version']} and v{b['version']}",
        ["", f"v{a['version']}", f"v{b['version']}"],
        [
            ["aliases", ",".join(a["aliases"]), ",".join(b["aliases"])],
            ["trigger", a["trigger"], b["trigger"]],
            ["parent", a["parent"], b["parent"]],
            *[[f"{m} (own holdout)", _f(a[m]), _f(b[m])] for m in ("precision", "recall", "f1")],
            ["decision", a["decision"], b["decision"]],
        ],
    )
    d = r["same_holdout"]
    if d is None:
        console.print(
            "Neither version was judged against the other, so no metrics on a common holdout: "
            "compare a challenger with the champion it challenged (rtml models shows 'parent')."
        )
        return
    table(
        f"{d['outcome']}: v{d['challenger']} vs champion v{d['champion']}, same holdout ({d.get('holdout')})",
        ["metric", f"champion v{d['champion']}", f"challenger v{d['challenger']}", "delta", "P(better)"],
        [
            [
                m,
                _f(x.get("champion"), ".4f"),
                _f(x.get("challenger"), ".4f"),
                _f(x.get("delta"), "+.4f"),
                _f(x.get("p_better"), ".2f"),
            ]
            for m, x in d["metrics"].items()
        ],
    )
    console.print(f"reason: {d['reason']}")


def compare(
    ctx: typer.Context,
    a: Annotated[str, typer.Argument(metavar="A", help="A registered version.")],
    b: Annotated[str, typer.Argument(metavar="B", help="Another registered version.")],
    as_json: JsonOpt = False,
) -> None:
    """Two versions side by side, with both on the same holdout when one challenged the other."""
    from rtml.models.lifecycle.compare import UnknownVersion, compare_versions

    try:
        result = compare_versions(settings_of(ctx), a, b)
    except UnknownVersion as exc:
        raise CommandError(str(exc)) from exc
    emit(result, as_json, _render)
