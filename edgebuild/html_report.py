"""Self-contained HTML pages: one for a build's report, one for a compression-plan search.

``build_html`` reads the dict a build writes as ``report.json``; ``search_html`` reads a search's
summary dict. Each returns one page: inline CSS, inline SVG figures drawn by matplotlib, plain
tables; no script, nothing fetched. Every text from the dict is escaped. A section whose data is
missing (an older report, another task, a LiteRT target without firmware) is left out. The same
dict gives the same bytes.
"""

from __future__ import annotations

import html
import io
import logging
import math
import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeGuard

from edgebuild.tasks import describe

if TYPE_CHECKING:
    from matplotlib.figure import Figure

_CSS = """body{font:14px/1.45 system-ui,sans-serif;color:#222;max-width:1200px;margin:1.5em auto;padding:0 1em}
h1{font-size:1.5em;margin:0 0 .3em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ddd}
.headline{background:#f1f5fa;border-left:4px solid #3b6ea5;padding:.5em .8em}
table{border-collapse:collapse;margin:.5em 0;font-size:13px}th,td{border:1px solid #ddd;padding:2px 7px}
th{background:#f3f3f3;text-align:left}td.n{text-align:right;font-variant-numeric:tabular-nums}
.wide{overflow-x:auto}td.notes{min-width:12em;font-size:12px}td.key{white-space:nowrap}
tr.chosen td{background:#fff6d5;font-weight:600}.ok{color:#1a7f37}.bad{color:#c62828;font-weight:600}
figure.figure{margin:.8em 0}figure svg{max-width:100%;height:auto}figcaption{font-size:13px;color:#555}
.note{color:#777;font-style:italic}.warnings li{color:#8a5a00}"""
_RC: dict[Any, Any] = {
    "svg.hashsalt": "edgebuild",  # clip-path ids from the content, not from a random number
    "svg.fonttype": "path",  # glyphs as paths: the page looks the same without the font
    "text.parse_math": False,  # a "$" in a layer or class name is text, not mathtext
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
}
_LABEL = {"boxstyle": "square,pad=0.15", "facecolor": "white", "edgecolor": "none", "alpha": 0.85}
_PARTS = {"model": "#3b6ea5", "tflm": "#e08b2c", "cmsis-nn": "#59a14f", "c library": "#8c6bb1", "harness": "#9c755f"}
_PARTS |= {"application": "#c9c9c9", "arena": "#4e9ac7", "stack": "#e15759", "free": "#f0f0f0"}
_OTHER_PARTS = ("#76b7b2", "#edc948", "#ff9da7", "#b07aa1", "#bab0ac")


def _e(value: object) -> str:
    """``value`` as text, escaped for HTML."""
    return html.escape(str(value))


def _num(value: object) -> TypeGuard[float]:
    """Whether ``value`` is a number (not a bool, not None)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def _int(value: object) -> str:
    """``12,345`` for a number, ``-`` for anything else."""
    return f"{value:,.0f}" if _num(value) else "-"


def _size(value: float) -> str:
    """``5,952 B``, ``27.7 KiB`` or ``8.0 MiB``."""
    for div, unit in ((1 << 20, "MiB"), (1 << 10, "KiB")):
        if abs(value) >= 10 * div:
            return f"{value / div:,.1f} {unit}"
    return f"{value:,.0f} B"


def _unit(top: float) -> tuple[float, str]:
    """The binary unit an axis up to ``top`` bytes is drawn in: (bytes in it, its name)."""
    return next(((div, unit) for div, unit in ((1 << 20, "MiB"), (1 << 10, "KiB")) if top >= 4 * div), (1, "B"))


def _metric(name: str, value: object) -> str:
    """A metric value as the markdown report says it: accuracy in percent, others to 4 digits."""
    if not _num(value):
        return "-"
    return f"{value:.2%}" if name == "accuracy" else f"{value:.4g}"


_CELL = {"r": ' class="n"', "w": ' class="notes"', "k": ' class="key"'}


def _table(head: list[str], rows: list[list[str]], align: str = "", classes: list[str] | None = None) -> str:
    """A plain table of already formatted (unescaped) cells; ``align`` per column: l, r (numbers),
    w (wide text) or k (a name kept on one line)."""
    out = ["<table><tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr>"]
    for i, row in enumerate(rows):
        cls = f' class="{classes[i]}"' if classes and classes[i] else ""
        cells = "".join(f"<td{_CELL.get(align[j : j + 1], '')}>{_e(c)}</td>" for j, c in enumerate(row))
        out.append(f"<tr{cls}>{cells}</tr>")
    return '<div class="wide">' + "\n".join(out) + "</table></div>\n"


def _figure_class() -> type[Figure]:
    """matplotlib's Figure, imported on first use and quietly (building its font cache is no news to a
    build). No pyplot: the caller's backend and global state stay as they are."""
    logger = logging.getLogger("matplotlib")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        from matplotlib.figure import Figure
    finally:
        logger.setLevel(level)
    return Figure


def _figure(fig_id: str, caption: str, size: tuple[float, float], draw: Callable[[Figure], None]) -> str:
    """``draw`` on a new figure of ``size`` inches, as inline SVG in a ``<figure>`` with ``caption``.

    The SVG's ids are prefixed with ``fig_id`` so that several figures share one page."""
    import matplotlib

    with matplotlib.rc_context(_RC):
        fig = _figure_class()(figsize=size, layout="constrained")
        draw(fig)
        buf = io.StringIO()
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None, "Format": None, "Type": None})
    svg = buf.getvalue()
    svg = re.sub(r'(id="|href="#|url\(#)', lambda m: m.group(1) + fig_id + "-", svg[svg.index("<svg") :])
    return f'<figure class="figure" id="{fig_id}">\n{svg}<figcaption>{_e(caption)}</figcaption>\n</figure>\n'


def _stacked(fig: Figure, rows: list[tuple[str, dict[str, int]]]) -> None:
    """Horizontal bars of ``rows`` (label, {part: bytes}), one part after another, and a legend below."""
    ax, colours = fig.subplots(), dict(_PARTS)
    div, unit = _unit(max(sum(parts.values()) for _, parts in rows))
    for i, (_, parts) in enumerate(rows):
        left = 0.0
        for part, size in parts.items():
            colour = colours.setdefault(part, _OTHER_PARTS[len(colours) % len(_OTHER_PARTS)])
            ax.barh(i, size / div, left=left, color=colour, edgecolor="white", linewidth=0.5, label=part)
            left += size / div
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    unique |= {"free": unique.pop("free")} if "free" in unique else {}  # last
    fig.legend(list(unique.values()), list(unique), loc="outside lower center", ncols=min(len(unique), 5))
    ax.set_yticks(range(len(rows)), [label for label, _ in rows])
    ax.set_xlabel(unit)
    ax.invert_yaxis()


# ----------------------------------------------------------------------------- build report sections


def _headline(report: dict[str, Any]) -> str:
    """Reads the artifact, the teacher and the budgets; returns the line that sums the build up."""
    artifact, teacher = report.get("artifact") or {}, report.get("teacher") or {}
    line = f"Artifact ({artifact.get('precision', '?')}): {describe(artifact.get('metrics') or {})}, "
    line += f"{_int(artifact.get('tflite_bytes'))} bytes"
    if _num(artifact.get("sparsity")):
        line += f", sparsity {artifact['sparsity']:.1%}"
    line += f". Float teacher: {describe(teacher.get('metrics') or {})}, {_int(teacher.get('tflite_bytes'))} bytes"
    if _num(teacher.get("tflite_bytes")) and _num(artifact.get("tflite_bytes")) and artifact["tflite_bytes"]:
        line += f" ({teacher['tflite_bytes'] / artifact['tflite_bytes']:.1f}x smaller)"
    budgets = [b for b in report.get("budgets") or [] if isinstance(b, dict)]
    missed = [str(b.get("name")) for b in budgets if not b.get("ok")]
    verdict = (
        f'<span class="{"bad" if missed else "ok"}">budgets: {len(budgets) - len(missed)} met, {len(missed)} missed'
    )
    verdict += f" ({_e(', '.join(missed))})</span>" if missed else "</span>"
    return f'<p class="headline">{_e(line)}. {verdict}</p>\n'


def _sizes(report: dict[str, Any]) -> str:
    """Reads the .tflite bytes of each stage (``profiles``, ``teacher``, ``artifact``); returns the size
    waterfall, or "" without any."""
    profiles, artifact = report.get("profiles") or {}, report.get("artifact") or {}
    steps: list[tuple[str, Any]] = [
        ("float teacher", (profiles.get("baseline") or report.get("teacher") or {}).get("tflite_bytes")),
        ("student", (profiles.get("distill") or {}).get("tflite_bytes")),
        ("pruned", (profiles.get("prune") or {}).get("tflite_bytes")),
        (f"{artifact.get('precision', '')} artifact", artifact.get("tflite_bytes")),
    ]
    steps = [(label, value) for label, value in steps if _num(value) and value > 0]
    if not steps:
        return ""
    sizes: list[float] = [value for _, value in steps]
    limit = next((b["limit"] for b in report.get("budgets") or [] if b.get("name") == "model_bytes"), None)

    div, unit = _unit(max(sizes))

    def draw(fig: Figure) -> None:
        ax = fig.subplots()
        ticks = [steps[0][0]]
        ticks += [
            f"{label}\n{1 - value / prev:+.0%}".replace("+", "−")
            for (label, value), prev in zip(steps[1:], sizes[:-1], strict=True)
        ]
        heights = [value / div for value in sizes]
        ax.bar(range(len(steps)), heights, width=0.6, color=["#9aa7b4"] + ["#3b6ea5"] * (len(steps) - 1))
        for i, value in enumerate(sizes):
            ax.annotate(_size(value), (i, heights[i]), xytext=(0, 3), textcoords="offset points", ha="center",
                        bbox=_LABEL)  # fmt: skip
            if i and heights[i - 1] > heights[i]:
                ax.bar(i, heights[i - 1] - heights[i], bottom=heights[i], width=0.6, color="none", edgecolor="#bbb",
                       hatch="//")  # fmt: skip
        if _num(limit) and limit <= 1.3 * max(sizes):
            ax.axhline(limit / div, color="#c62828", linestyle="--", label=f"model_bytes budget {_size(limit)}")
            ax.legend(frameon=False)
        ax.set_xticks(range(len(steps)), ticks)
        ax.set_ylabel(f".tflite size ({unit})")
        ax.margins(y=0.12)

    caption = "The .tflite at each stage; hatched: what the stage removed, in percent of the stage before."
    return "<h2>Size</h2>\n" + _figure("fig-sizes", caption, (7.5, 3.2), draw)


def _metrics(report: dict[str, Any]) -> str:
    """Reads ``stage_metrics`` and the artifact's metrics; returns one small plot per metric, or ""."""
    names = {"baseline": "teacher", "distill": "student", "prune": "pruned", "qat": "QAT"}
    columns = [(names.get(s, s), m) for s, m in (report.get("stage_metrics") or {}).items() if isinstance(m, dict)]
    if (report.get("artifact") or {}).get("metrics"):
        columns.append(("artifact\n(runner)", report["artifact"]["metrics"]))
    metrics = list(dict.fromkeys(name for _, m in columns for name in m))
    if not metrics:
        return ""

    def draw(fig: Figure) -> None:
        for ax, name in zip(fig.subplots(1, len(metrics), squeeze=False)[0], metrics, strict=True):
            points = [(i, m[name]) for i, (_, m) in enumerate(columns) if _num(m.get(name))]
            if not points:
                continue
            ax.plot([i for i, _ in points], [v for _, v in points], marker="o", color="#3b6ea5")
            ax.axhline(points[0][1], color="#999", linestyle="--", linewidth=0.8)
            for i, value in points:
                ax.annotate(_metric(name, value), (i, value), xytext=(0, 7), textcoords="offset points", ha="center",
                            bbox=_LABEL)  # fmt: skip
            ax.set_xticks(range(len(columns)), [label for label, _ in columns])
            ax.set_xlim(-0.5, len(columns) - 0.5)
            ax.set_title(name)
            ax.margins(y=0.3)
            if name == "accuracy":
                ax.yaxis.set_major_formatter(lambda v, _: f"{v:.1%}")

    caption = "The test metric after each stage (dashed: the first stage's value); the last point is the artifact."
    return "<h2>Metric at each stage</h2>\n" + _figure("fig-metrics", caption, (min(4.0 * len(metrics), 10.5), 3), draw)


def _confusion(report: dict[str, Any]) -> str:
    """Reads the artifact's confusion matrix (classification); returns it as a heat map with counts, or ""."""
    artifact = report.get("artifact") or {}
    matrix = artifact.get("confusion_matrix")
    if report.get("task") != "classification" or not matrix:
        return ""
    labels = [str(k) for k in artifact.get("per_class_accuracy") or {}]
    labels = labels if len(labels) == len(matrix) else [str(i) for i in range(len(matrix))]
    n, top = len(matrix), max(max(row) for row in matrix) or 1

    def draw(fig: Figure) -> None:
        ax = fig.subplots()
        ax.pcolormesh(matrix, cmap="Blues", vmin=0, vmax=top, edgecolors="white", linewidth=0.5)
        if n <= 25:
            for r, row in enumerate(matrix):
                for c, value in enumerate(row):
                    colour = "white" if value > top / 2 else "#333" if value else "#bbb"
                    ax.text(c + 0.5, r + 0.5, str(value), ha="center", va="center", color=colour, fontsize=8)
        ticks = [i + 0.5 for i in range(n)]
        ax.set_xticks(ticks, [x[:12] for x in labels], rotation=90 if n > 12 else 0)
        ax.set_yticks(ticks, [y[:12] for y in labels])
        ax.tick_params(length=0)
        ax.spines[:].set_visible(False)
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        shares = artifact.get("per_class_accuracy") or {}
        if len(shares) == n:
            ax.text(n + 0.15, -0.1, "accuracy", fontsize=8, va="bottom", color="#555")
            for r, share in enumerate(shares.values()):
                ax.text(n + 0.15, r + 0.5, _metric("accuracy", share), va="center", fontsize=8, color="#555")
        ax.invert_yaxis()
        ax.set_aspect("equal")

    side = min(2.6 + 0.26 * n, 9.0)
    caption = f"Confusion matrix of the artifact on the test split ({describe(artifact.get('metrics') or {})})."
    return "<h2>Confusion matrix</h2>\n" + _figure("fig-confusion", caption, (side, side), draw)


def _pruning(report: dict[str, Any]) -> str:
    """Reads ``pruning.layers``; returns the channels of each layer before and after, or ""."""
    pruning = report.get("pruning") or {}
    layers = [c for c in pruning.get("layers") or [] if isinstance(c, dict) and _num(c.get("before"))]
    if not layers:
        return ""

    def draw(fig: Figure) -> None:
        ax = fig.subplots()
        labels = [f"{c.get('layer', '?')} ({c.get('kind', '?')})"[:48] for c in layers]
        rows = range(len(layers))
        ax.barh(rows, [c["before"] for c in layers], color="#d5dbe2", label="before")
        ax.barh(rows, [c.get("after") or 0 for c in layers], height=0.5, color="#3b6ea5", label="after")
        ax.set_yticks(rows, labels)
        for i, c in enumerate(layers):
            note = f"  {c['before']} → {_int(c.get('after'))}" + ("  (skipped)" if c.get("skipped") else "")
            ax.text(c["before"], i, note, va="center", fontsize=8)
        ax.set_xlim(0, max(c["before"] for c in layers) * 1.3)
        ax.set_xlabel("channels (units)")
        ax.invert_yaxis()
        ax.legend(frameon=False, loc="lower right")

    caption = f"Channels per layer before and after channel pruning ({pruning.get('criterion', '?')} criterion)"
    caption += f"; parameters {_int(pruning.get('parameters_before'))} → {_int(pruning.get('parameters_after'))}."
    return "<h2>Pruning</h2>\n" + _figure("fig-pruning", caption, (7.5, 0.9 + 0.32 * len(layers)), draw)


def _budget_value(value: object, unit: str) -> str:
    """A budget's number in its unit: bytes, a fraction in percent, or plain."""
    if not _num(value):
        return "-"
    return {"bytes": f"{value:,.0f} B", "fraction": f"{value:.2%}"}.get(unit, f"{value:.4g}")


def _budgets(report: dict[str, Any]) -> str:
    """Reads ``budgets``; returns their table and, for upper limits, how much of each is used; or ""."""
    budgets = [b for b in report.get("budgets") or [] if isinstance(b, dict)]
    if not budgets:
        return ""
    rows = [
        [str(b.get("name")), str(b.get("kind"))]
        + [_budget_value(b.get(k), str(b.get("unit"))) for k in ("limit", "actual", "margin")]
        + ["met" if b.get("ok") else "MISSED"]
        for b in budgets
    ]
    out = "<h2>Budgets</h2>\n" + _table(["budget", "kind", "limit", "actual", "margin", ""], rows, "llrrrl")
    used = [b for b in budgets if b.get("kind") == "max" and _num(b.get("limit")) and b["limit"] > 0]
    used = [b for b in used if _num(b.get("actual"))]
    if not used:
        return out

    def draw(fig: Figure) -> None:
        ax = fig.subplots()
        shares = [max(b["actual"] / b["limit"], 0.0) for b in used]
        names = [str(b["name"])[:32] for b in used]
        ax.barh(range(len(used)), shares, color=["#59a14f" if b.get("ok") else "#c62828" for b in used])
        ax.set_yticks(range(len(used)), names)
        for i, (share, b) in enumerate(zip(shares, used, strict=True)):
            text = f"  {share:.1%} ({_budget_value(b['actual'], b['unit'])} of {_budget_value(b['limit'], b['unit'])})"
            ax.text(share, i, text, va="center", fontsize=8)
        ax.axvline(1.0, color="#c62828", linestyle="--", linewidth=1)
        ax.set_xlim(0, max(1.0, *shares) * 1.6)
        ax.xaxis.set_major_formatter(lambda v, _: f"{v:.0%}")
        ax.set_xlabel("share of the limit used")
        ax.invert_yaxis()

    caption = "How much of each upper limit the artifact uses (dashed: the limit)."
    return out + _figure("fig-budgets", caption, (7.5, 0.8 + 0.35 * len(used)), draw)


def _validation(report: dict[str, Any]) -> str:
    """Reads ``validation``; returns the end-to-end comparison and the per-op table, or ""."""
    v = report.get("validation") or {}
    if not v:
        return ""
    line = f"On {v.get('device', '?')} against {v.get('reference', '?')}: {_int(v.get('mismatched_outputs'))} of "
    line += f"{_int(v.get('compared_outputs'))} outputs differ, max {v.get('max_lsb_diff')} LSB"
    if report.get("task") == "classification" and _num(v.get("top1_agreement")):
        line += f", top-1 agreement {v['top1_agreement']:.2%}"
    out = f"<h2>Validation</h2>\n<p>{_e(line)}.</p>\n"
    ops = [op for op in v.get("ops") or [] if isinstance(op, dict)]
    if ops:
        keys = list(ops[0])
        rows = [[str(op.get(k, "-")) for k in keys] for op in ops]
        out += _table([k.replace("_", " ") for k in keys], rows, "".join("l" if k == "op" else "r" for k in keys))
    return out


def _speed(report: dict[str, Any]) -> str:
    """Reads ``validation``: the firmware run when there is one, else the measured latencies; or ""."""
    v = report.get("validation") or {}
    run = v.get("device_run") or {}
    fw = run.get("firmware")
    if fw:
        return _firmware_run(run, fw)
    rows = [(str(v.get("device", "validation runner")), v.get("latency") or {})]
    if run.get("latency"):
        rows.append((f"{run.get('measured_on') or run.get('device')} {run.get('latency_note', '')}", run["latency"]))
    keys = list(dict.fromkeys(k for _, latency in rows for k in latency))
    if not keys:
        return ""
    table = [[where, *(f"{lat[k]:.4f}" if _num(lat.get(k)) else "-" for k in keys)] for where, lat in rows]
    head = ["measured on", *(k.removesuffix("_ms") + " ms" for k in keys)]
    return "<h2>Latency</h2>\n" + _table(head, table, "l" + "r" * len(keys))


def _firmware_run(run: dict[str, Any], fw: dict[str, Any]) -> str:
    """Reads a device run's ``firmware``: instructions per inference, flash and RAM by part, both kernels."""
    count = fw.get("instructions") or {}
    out = f"<h2>Firmware run</h2>\n<p>{_e(run.get('measured_on', ''))}: {_int(fw.get('inferences'))} inferences, "
    out += f"{_e(describe(run.get('metrics') or {}))}. Instructions per inference (QEMU -icount, not cycles):</p>\n"
    out += _table(["mean", "min", "max"], [[_int(count.get(k)) for k in ("mean", "min", "max")]], "rrr")
    rows = [(f"FLASH {_int(fw.get('flash_bytes'))} B", fw.get("flash_by_part") or {})]
    rows.append((f"RAM {_int(fw.get('ram_bytes'))} B", fw.get("ram_by_part") or {}))
    rows = [(label, parts) for label, parts in rows if parts]
    if rows:
        caption = "The firmware's flash and RAM by part, as linked."
        out += _figure("fig-firmware", caption, (7.5, 2.2), lambda fig: _stacked(fig, rows))
    kernels = [k for k in fw.get("kernel_comparison") or [] if isinstance(k, dict)]
    if kernels:
        head = ["kernels", "instructions (mean)", "min", "max", "flash B", "arena used B", "outputs differing"]
        table = []
        for k in kernels:
            count, same = k.get("instructions") or {}, k.get("vs_host_tflm") or {}
            table.append([str(k.get("kernels")), *(_int(count.get(s)) for s in ("mean", "min", "max"))])
            differ = f"{_int(same.get('mismatched_outputs'))} of {_int(same.get('compared_outputs'))}"
            table[-1] += [_int(k.get("flash_bytes")), _int(k.get("arena_used_bytes")), differ]
        out += "<p>Both TFLM kernel families on the same firmware:</p>\n" + _table(head, table, "lrrrrrr")
    return out


def _regions(report: dict[str, Any]) -> str:
    """Reads ``firmware.regions``; returns each region's parts and free bytes as stacked bars and a table, or ""."""
    firmware = report.get("firmware") or {}
    regions = [r for r in firmware.get("regions") or [] if isinstance(r, dict) and _num(r.get("total"))]
    if not regions:
        return ""
    rows = []
    for r in regions:
        parts = dict(r.get("parts") or {"used": r.get("used", 0)})
        parts["free"] = max(r.get("margin", r["total"] - r.get("used", 0)), 0)
        share = f" ({r['used'] / r['total']:.0%})" if _num(r.get("used")) and r["total"] else ""
        rows.append((f"{r.get('name')}{share}\n{_int(r.get('used'))} of {_int(r['total'])} B", parts))
    caption = f"Memory regions of the linked firmware (runtime from {firmware.get('fit_from') or 'the linker'})."
    draw: Callable[[Figure], None] = lambda fig: _stacked(fig, rows)  # noqa: E731
    out = "<h2>Memory regions</h2>\n" + _figure("fig-regions", caption, (7.5, 0.9 + 0.6 * len(rows)), draw)
    names = list(dict.fromkeys(name for _, parts in rows for name in parts if name != "free"))
    table = [
        [str(r.get("name")), *(_int(p.get(n)) for n in names), _int(p["free"]), _int(r["total"])]
        for r, (_, p) in zip(regions, rows, strict=True)
    ]
    return out + _table(["region (bytes)", *names, "free", "total"], table, "l" + "r" * (len(names) + 2))


def _warnings(report: dict[str, Any]) -> str:
    """Reads ``warnings``; returns them as a list, or ""."""
    warnings = report.get("warnings") or []
    if not warnings:
        return ""
    return '<h2>Warnings</h2>\n<ul class="warnings">' + "".join(f"<li>{_e(w)}</li>" for w in warnings) + "</ul>\n"


def _page(title: str, body: list[str]) -> str:
    """The whole page: ``title`` and the ``body`` sections, with the inline CSS."""
    head = f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{_e(title)}</title>\n'
    return (
        head + f"<style>{_CSS}</style>\n</head>\n<body>\n<h1>{_e(title)}</h1>\n" + "".join(body) + "</body>\n</html>\n"
    )


def _sections(data: dict[str, Any], builders: Sequence[Callable[[dict[str, Any]], str]]) -> list[str]:
    """Each builder's HTML; one that meets data it cannot read leaves a note instead of failing the page."""
    out = []
    for builder in builders:
        try:
            out.append(builder(data))
        except (KeyError, TypeError, ValueError, AttributeError, IndexError, ZeroDivisionError) as e:
            out.append(f'<p class="note">section {builder.__name__.strip("_")} left out: {_e(repr(e))}</p>\n')
    return out


def build_html(report: dict[str, Any]) -> str:
    """The HTML page for a build: reads a dict shaped like ``report.json``, returns the page's text."""
    title = f"edgebuild report: {report.get('recipe', '?')} for {report.get('target', '?')}"
    builders = [_headline, _sizes, _metrics, _confusion, _pruning, _budgets, _validation, _speed, _regions, _warnings]
    return _page(title, _sections(report, builders))


# ----------------------------------------------------------------------------- search page


def _trial_plot(search: dict[str, Any], x_key: str, front_key: str, budget_key: str, fig_id: str) -> str:
    """Validation metric against ``x_key`` (bytes) for every trial with both: feasible, infeasible and
    stopped trials apart, ``front_key``'s trials joined, the chosen one labelled, the budget lines."""
    trials = [t for t in search.get("trials") or [] if isinstance(t, dict)]
    points = [t for t in trials if _num(t.get(x_key)) and t[x_key] > 0 and _num(t.get("validation_metric"))]
    if not points:
        return ""
    metric, higher = str(search.get("metric", "metric")), bool(search.get("higher_is_better", True))
    by_id = {t.get("id"): t for t in points}
    front = sorted((by_id[i] for i in search.get(front_key) or [] if i in by_id), key=lambda t: t[x_key])
    chosen = by_id.get(search.get("chosen"))
    budgets, teacher = search.get("budgets") or {}, (search.get("teacher") or {}).get("validation_metric")
    limit, drop = budgets.get(budget_key), budgets.get("max_metric_drop")
    done = [t for t in points if t.get("status") == "done"]
    groups = [
        ("meets the budgets", "o", "#59a14f", [t for t in done if t.get("budgets_met")]),
        ("misses a budget", "X", "#e15759", [t for t in done if not t.get("budgets_met")]),
        ("stopped early", "s", "#9aa7b4", [t for t in points if t.get("status") != "done"]),
    ]
    xs = [t[x_key] for t in points] + ([limit] if _num(limit) and limit > 0 else [])
    div, unit = _unit(max(xs))

    def xy(t: dict[str, Any]) -> tuple[float, float]:
        return t[x_key] / div, t["validation_metric"]

    def columns(ts: list[dict[str, Any]]) -> tuple[list[float], list[float]]:
        return [t[x_key] / div for t in ts], [t["validation_metric"] for t in ts]

    log_x = max(xs) / min(xs) >= 10

    def label_side(t: dict[str, Any]) -> tuple[int, str]:
        """Left of a point in the right part of the axis, right of one in the left part (a label in
        full, never over the axis)."""
        lo, hi, x = min(xs), max(xs), t[x_key]
        where = (math.log(x / lo) / math.log(hi / lo) if log_x else (x - lo) / (hi - lo)) if hi > lo else 1.0
        return (-9, "right") if where > 0.4 else (9, "left")

    def draw(fig: Figure) -> None:
        from matplotlib.ticker import LogLocator, NullFormatter

        ax = fig.subplots()
        # Labels go where no trial can be: beyond the front, towards a better metric.
        dy, va = (6, "bottom") if higher else (-6, "top")
        for label, marker, colour, group in groups:
            if group:
                ax.scatter(*columns(group), marker=marker, color=colour, s=36, label=label, zorder=3)
        if front:
            ax.plot(*columns(front), color="#3b6ea5", linewidth=2, zorder=2, label="Pareto front")
            ax.scatter(*columns(front), s=110, facecolors="none", edgecolors="#3b6ea5", zorder=4)
            for t in front:
                if t is not chosen:
                    dx, ha = label_side(t)
                    ax.annotate(str(t.get("id"))[:28], xy(t), xytext=(dx, dy), textcoords="offset points",
                                ha=ha, va=va, fontsize=8, color="#3b6ea5")  # fmt: skip
        if chosen is not None:
            ax.scatter(*xy(chosen), marker="*", s=320, color="#f2b701", edgecolors="#333", zorder=5, label="chosen")
            dx, ha = label_side(chosen)
            ax.annotate(f"chosen: {str(chosen.get('id'))[:28]}", xy(chosen), xytext=(dx, dy), ha=ha, va=va,
                        textcoords="offset points", fontweight="bold")  # fmt: skip
        if _num(limit) and limit > 0:
            ax.axvline(limit / div, color="#c62828", linestyle="--", label=f"{budget_key} budget {_size(limit)}")
        if _num(teacher) and _num(drop):
            sign = "−" if higher else "+"
            floor = teacher - drop if higher else teacher + drop
            ax.axhline(floor, color="#8c6bb1", linestyle=":", linewidth=1.2, label=f"teacher {sign} max drop")
        if log_x:
            ax.set_xscale("log")
            ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            ax.xaxis.set_major_formatter(lambda v, _: f"{v:,g}")
            ax.xaxis.set_minor_formatter(NullFormatter())
        if metric == "accuracy":
            ax.yaxis.set_major_formatter(lambda v, _: f"{v:.1%}")
        ax.set_xlabel(f"{x_key.replace('_', ' ')} ({unit})")
        ax.set_ylabel(f"validation {metric} ({'higher' if higher else 'lower'} is better)")
        ax.grid(alpha=0.3)
        ax.margins(x=0.08, y=0.12)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)

    what = "the .tflite's size" if x_key == "tflite_bytes" else "the TFLM arena"
    caption = f"Validation {metric} against {what} for every trial that measured both; the line joins the Pareto front."
    return _figure(fig_id, caption, (9.0, 4.6), draw)


def _plan_text(plan: dict[str, Any]) -> str:
    """``student_width 0.5, sparsity 0.25``: a plan's fields in a line."""
    return ", ".join(f"{k} {v}" for k, v in plan.items())


def _search_summary(search: dict[str, Any]) -> str:
    """Reads the trials, the teacher, the budgets and the choice; returns the line that sums the search up."""
    trials = [t for t in search.get("trials") or [] if isinstance(t, dict)]
    status = [t.get("status") for t in trials]
    metric = str(search.get("metric", "metric"))
    line = f"{search.get('algorithm', '?')} search: {len(trials)} of {search.get('trials_asked', len(trials))} trials "
    line += f"run ({status.count('done')} done, {status.count('stopped')} stopped, {status.count('failed')} failed)"
    if _num(search.get("seconds")):
        line += f" in {search['seconds']:,.0f} s"
    line += f"; {sum(1 for t in trials if t.get('budgets_met'))} meet every budget."
    teacher = search.get("teacher") or {}
    line += f" Teacher: validation {metric} {_metric(metric, teacher.get('validation_metric'))}, "
    line += f"test {_metric(metric, teacher.get('test_metric'))}."
    limits = {k: v for k, v in (search.get("budgets") or {}).items() if _num(v)}
    if limits:
        line += " Budgets: " + ", ".join(f"{k} {v:,.0f} B" if "bytes" in k else f"{k} {v:g}" for k, v in limits.items())
        line += "."
    chosen = next((t for t in trials if t.get("id") == search.get("chosen") and search.get("chosen")), None)
    if chosen is None:
        verdict = '<span class="bad">No plan meets every budget: none chosen.</span>'
    else:
        text = f"Chosen: {chosen.get('id')} ({_plan_text(chosen.get('plan') or {})}): "
        text += f"{_int(chosen.get('tflite_bytes'))} bytes, validation {metric} "
        text += f"{_metric(metric, chosen.get('validation_metric'))}"
        if _num(chosen.get("validation_log_loss")):
            text += f", validation log-loss {chosen['validation_log_loss']:.4f}"
        text += f", test {_metric(metric, chosen.get('test_metric'))}; {_chosen_by(search, metric)}"
        if search.get("best_recipe"):
            text += f"; its recipe: {search['best_recipe']}"
        verdict = f'<span class="ok">{_e(text)}.</span>'
    return f'<p class="headline">{_e(line)} {verdict}</p>\n'


def _chosen_by(search: dict[str, Any], metric: str) -> str:
    """Why the chosen plan: the rule of the search's ``choose``, in words."""
    if search.get("choose") == "smallest":
        return f"of the plans that meet every budget, the fewest bytes (choose = smallest), then the best {metric}"
    losses = any(_num(t.get("validation_log_loss")) for t in search.get("trials") or [] if isinstance(t, dict))
    first = "the lowest validation log-loss (the figures show accuracy)" if losses else f"the best validation {metric}"
    return f"of the plans that meet every budget, {first} (choose = most_accurate)"


def _search_figures(search: dict[str, Any]) -> str:
    """The two trade-off figures: the metric against the .tflite bytes and against the arena bytes."""
    out = _trial_plot(search, "tflite_bytes", "front_bytes", "model_bytes", "fig-pareto-bytes")
    out += _trial_plot(search, "arena_bytes", "front_arena", "arena_bytes", "fig-pareto-arena")
    return "<h2>Trade-offs</h2>\n" + out if out else '<p class="note">No trial measured a size and a metric.</p>\n'


def _search_table(search: dict[str, Any]) -> str:
    """Reads ``trials``; returns one row per trial (the chosen one marked), or ""."""
    trials = [t for t in search.get("trials") or [] if isinstance(t, dict)]
    if not trials:
        return ""
    metric = str(search.get("metric", "metric"))
    plans = [t.get("plan") or {} for t in trials]
    fields = list(dict.fromkeys(k for plan in plans for k in plan))
    same = {k: plans[0].get(k) for k in fields if len(trials) > 1 and len({str(p.get(k)) for p in plans}) == 1}
    fields = [k for k in fields if k not in same]
    fronts = {i: "bytes" for i in search.get("front_bytes") or []}
    for i in search.get("front_arena") or []:
        fronts[i] = fronts[i] + ", arena" if i in fronts else "arena"
    counted = any(_num(t.get("instructions_per_inference")) for t in trials)  # only firmware counts them
    head = ["trial", *fields, "status", ".tflite B", "arena B", *(["instr. / inference"] if counted else [])]
    head += ["latency ms", f"val. {metric}", "val. log-loss", f"test {metric}", "front", "s", "budgets"]
    rows, classes = [], []
    for t in trials:
        plan = t.get("plan") or {}
        why = "; ".join(dict.fromkeys(str(s) for s in [t.get("reason"), *(t.get("missed") or [])] if s))
        latency = f"{t['host_latency_ms']:.4f}" if _num(t.get("host_latency_ms")) else "-"
        met = "met" if t.get("budgets_met") else why if t.get("status") != "done" else f"missed: {why}"
        rows.append([str(t.get("id")), *(str(plan.get(k, "-")) for k in fields), str(t.get("status"))])
        rows[-1] += [_int(t.get("tflite_bytes")), _int(t.get("arena_bytes"))]
        rows[-1] += [_int(t.get("instructions_per_inference"))] if counted else []
        loss = f"{t['validation_log_loss']:.4f}" if _num(t.get("validation_log_loss")) else "-"
        rows[-1] += [latency, _metric(metric, t.get("validation_metric")), loss, _metric(metric, t.get("test_metric"))]
        rows[-1] += [fronts.get(t.get("id"), ""), f"{t['seconds']:.0f}" if _num(t.get("seconds")) else "-", met or "-"]
        classes.append("chosen" if search.get("chosen") and t.get("id") == search.get("chosen") else "")
    align = "k" + "l" * (len(fields) + 1) + "rr" + "r" * counted + "rrrrlrw"
    common = f"<p>Every plan: {_e(_plan_text(same))}.</p>\n" if same else ""
    return "<h2>Trials</h2>\n" + common + _table(head, rows, align, classes)


def search_html(search: dict[str, Any]) -> str:
    """The HTML page for a compression-plan search: reads the search's summary dict (its trials, fronts,
    choice and budgets), returns the page's text."""
    title = f"edgebuild search: {search.get('recipe', '?')} for {search.get('target', '?')}"
    return _page(title, _sections(search, [_search_summary, _search_figures, _search_table]))
