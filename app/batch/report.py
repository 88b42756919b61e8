"""``DIR/report.html``: one self-contained page (no external files, scripts or fonts; thumbnails inlined as base64
PNG) listing the studies by study-level score, most abnormal first, each with its most abnormal slice and the
detection overlaid, then the failures with their errors."""

from __future__ import annotations

import base64
import html
import time
from pathlib import Path

from app.core.findings import SCORE_LABEL
from app.viewer.worklist import rank, refresh_interval

CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.4em} table{border-collapse:collapse} td,th{padding:4px 8px;border-bottom:1px solid #ddd;
vertical-align:middle;text-align:left} th{background:#f3f3f3} td.num{text-align:right;font-variant-numeric:tabular-nums}
img{display:block;image-rendering:auto;border:1px solid #999} .err{color:#a00} .meta{color:#555;font-size:.9em}
.triage{padding:.5em .8em;border-radius:4px;max-width:60em}
.warn{background:#fff3cd;color:#5c4400;border:1px solid #e0c36a}
.ok{background:#e6f2e6;color:#1d4d1d;border:1px solid #9c9}
"""


def _thumb(folder: Path, r: dict) -> str:
    name = (r.get("outputs") or {}).get("thumbnail")
    p = folder / str(r.get("id")) / name if name else None
    if p is None or not p.is_file():
        return "<em>no thumbnail</em>"
    b64 = base64.b64encode(p.read_bytes()).decode("ascii")
    return f'<img alt="slice {r.get("peak_slice")}" src="data:image/png;base64,{b64}">'


def report_html(folder: str | Path, results: list[dict], meta: dict | None = None) -> str:
    folder = Path(folder)
    ranked, failed = rank(results)
    meta = meta or {}
    e = html.escape
    rows = []
    for i, r in enumerate(ranked, 1):
        biggest = (r.get("findings") or [{}])[0] if r.get("findings") else {}
        centre = biggest.get("centre_mm")
        where = (
            f"{biggest.get('volume_ml', 0):.2f} ml at ({', '.join(f'{v:.0f}' for v in centre)}) mm" if centre else "-"
        )
        warn = "; ".join(r.get("warnings") or [])
        rows.append(
            "<tr>"
            f'<td class="num">{i}</td><td>{_thumb(folder, r)}</td>'
            f"<td><b>{e(str(r.get('id')))}</b><br><span class=meta>{e(str((r.get('input') or {}).get('source', '')))}"
            f"</span>{'<br><span class=meta>' + e(warn) + '</span>' if warn else ''}</td>"
            f'<td class="num">{float(r.get("score") or 0):.3f}</td>'
            f'<td class="num">{r.get("peak_slice")}</td>'
            f'<td class="num">{r.get("n_findings")}</td>'
            f'<td class="num">{float(r.get("flagged_ml") or 0):.2f}</td>'
            f"<td>{e(where)}</td>"
            "</tr>"
        )
    fails = [
        f"<tr><td>{e(str(r.get('id')))}</td><td>{e(str((r.get('input') or {}).get('source', '')))}</td>"
        f"<td class=err>{e(str(r.get('error', '')))}</td></tr>"
        for r in failed
    ]
    definition = next((r.get("score_definition") for r in ranked if r.get("score_definition")), "")
    model = meta.get("model", "")
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    head = (
        f"<p class=meta>model {e(str(model))}{_mode(meta)}, tau {_num(meta.get('tau', ''))}{_cut(meta)}; "
        f"{len(ranked)} stud{'y' if len(ranked) == 1 else 'ies'} analysed, {len(failed)} failed; written {stamp}"
        f"<br>score: {e(definition)}. Research software, not a diagnostic device.</p>"
    )
    ev = meta.get("triage_evidence") or {}
    evidence = (
        f'<p class="triage {"ok" if ev.get("status") == "validated" else "warn"}" id="triage-evidence">'
        f"{e(str(ev['text']))}</p>"
        if ev.get("text")
        else ""
    )
    pending = int(meta.get("n_pending") or 0)
    rewrite = meta.get("rewrite_s")
    reload_s = int(refresh_interval(rewrite)) if pending and isinstance(rewrite, int | float) else None
    again = f"This page reloads itself every {reload_s} s" if reload_s else "Load the page again later"
    unfinished = (
        f'<p class="triage warn" id="unfinished">Not finished: {pending} stud{"y" if pending == 1 else "ies"} still '
        f"to do when this page was written (the batch is still running, or was stopped). {again}; the order may "
        "still change.</p>"
        if pending
        else ""
    )
    # a page of a batch still running follows it in the browser: the batch writes it again every rewrite_s
    refresh = f'<meta http-equiv="refresh" content="{reload_s}">' if reload_s else ""
    table = (
        f"<table><tr><th>rank</th><th>most abnormal slice</th><th>study</th><th>{e(SCORE_LABEL)}</th><th>slice</th>"
        "<th>findings</th><th>flagged (ml)</th><th>largest finding</th></tr>" + "".join(rows) + "</table>"
    )
    fail_html = (
        "<h2>Failed studies</h2><table><tr><th>id</th><th>source</th><th>error</th></tr>" + "".join(fails) + "</table>"
        if fails
        else ""
    )
    return (
        f"<!DOCTYPE html><html><head><meta charset=utf-8>{refresh}<title>MatchGen worklist</title>"
        f"<style>{CSS}</style></head><body><h1>MatchGen worklist</h1>{head}{unfinished}{evidence}{table}{fail_html}"
        "</body></html>\n"
    )


def write_report(folder: str | Path, results: list[dict], meta: dict | None = None) -> Path:
    from app.atomic import atomic_write_bytes

    path = Path(folder) / "report.html"
    atomic_write_bytes(path, report_html(folder, results, meta).encode("utf-8"))
    return path


def _mode(meta: dict) -> str:
    """What the run computed, in words: the base map alone, or MatchGen with its eps."""
    if meta.get("base_only"):
        return " (base map, no MatchGen)"
    return f" + MatchGen, eps {_num(meta.get('eps', ''))}"


def _cut(meta: dict) -> str:
    """The reporting cut of a screening detection, in words ("" when every finding is reported)."""
    cut = meta.get("report_above")
    return "" if cut is None else f", findings reported when their peak D exceeds {_num(cut)}"


def _num(v) -> str:
    """A setting as a reader reads it (6 significant digits), or as it is when it is not a number."""
    return f"{v:.6g}" if isinstance(v, int | float) else str(v)
