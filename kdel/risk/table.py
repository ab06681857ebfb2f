"""Terminal tables of risk predictions and plans (rich)."""

from __future__ import annotations


def _f(x, fmt: str = ".3f") -> str:
    return "-" if x is None else format(x, fmt)


def _console():
    from rich.console import Console

    return Console(highlight=False, width=140)


def print_risk(res: dict, top: int = 10) -> None:
    """One table per case: its summary by predictor, then the `top` probe facts at highest risk."""
    from rich.table import Table

    con = _console()
    learned = "learned" in res["predictors"]
    for case in res["cases"]:
        f = case["fact"]
        con.print(f"[bold]{res['method']} at layer {res['layer']} ({res['site']}): delete fact {f['id']}[/bold] "
                  f"{f['subject']} | {f['relation']} | {f['target']}")
        for name, s in case["summary"].items():
            extra = f", P(success) {_f(s.get('p_success'))}" if s.get("p_success") is not None else ""
            con.print(f"  {name:11s} expected flips {_f(s['expected_flips'], '.2f')}, global accuracy drop "
                      f"{_f(s['global_accuracy_drop'], '.4f')}, mean p drop {_f(s['mean_p_drop'], '.4f')}{extra}")
        probes = [p for p in case["probes"] if p["recalled_before"]]
        if learned:
            probes.sort(key=lambda p: -p["learned"]["p_flip"])
        else:
            probes.sort(key=lambda p: p["first_order"]["margin_after"])
        t = Table(show_edge=False, pad_edge=False)
        for col in ("fact", "group", "subject | relation | object", "κ", "Δlog p (1st order)", "flip (1st)",
                    "P(flip)", "p drop"):
            t.add_column(col, overflow="fold")
        for p in probes[:top]:
            fo, le = p["first_order"], p["learned"]
            t.add_row(str(p["fact_id"]), p["group"], f"{p['subject']} | {p['relation']} | {p['target']}",
                      _f(fo and fo["kappa"]), _f(fo and fo["dlogp"], ".2f"),
                      "-" if fo is None else ("yes" if fo["flip"] else "no"),
                      _f(le and le["p_flip"]), _f(le["p_drop"] if le else (fo and fo["p_drop"])))
        con.print(t)


def print_plan(plan: dict, top: int = 20) -> None:
    from rich.table import Table

    con = _console()
    t = Table(title=f"candidates for fact(s) {', '.join(map(str, plan['fact_ids']))} "
                    f"(predicted to erase: P(success) >= {plan['efficacy_threshold']})", show_edge=False)
    for col in ("", "method", "site", "layer", "P(success)", "expected flips", "mean p drop", "1st-order flips",
                "trial: erased, flips, mean p drop"):
        t.add_column(col)
    chosen = plan["chosen"]
    tried = {tr["key"]: tr for tr in plan.get("trials") or []}
    for c in plan["candidates"][:top]:
        mark = "→" if chosen is not None and c["key"] == chosen["key"] else ""
        tr = tried.get(c["key"])
        trial = "" if tr is None else (f"{'yes' if tr['success'] else 'no'}{' (wrecked)' if tr['wrecked'] else ''}, "
                                       f"{tr['flips']}, {tr['mean_p_drop']:.4f}" if tr["status"] == "ok" else "failed")
        t.add_row(mark, c["method"], c["site"], str(c["layer"]), _f(c["p_success"]), _f(c["expected_flips"], ".2f"),
                  _f(c["mean_p_drop"], ".4f"), _f(c.get("first_order_flips"), ".0f"), trial)
    con.print(t)
