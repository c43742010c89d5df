"""report.html and search.html: self-contained pages, read here with html.parser and rendered by
headless Chromium, offline (Debian's ``chromium`` package; the Chromium tests skip without it).

The build's page comes from the session's quick build (conftest's ``clean_quick_build``, read by
test_cache and test_determinism too: no extra build). The search's input is the hand-made SEARCH
below, in the format the search writes. Screenshots go to $EDGEBUILD_SCREENSHOTS when it is set.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from edgebuild.html_report import build_html, search_html
from tests.conftest import Build

HOSTILE = 'a"; <script>alert(1)</script>'
BUILD_FIGURES = {"fig-sizes", "fig-metrics", "fig-confusion", "fig-pruning", "fig-budgets", "fig-regions"}
SEARCH_FIGURES = {"fig-pareto-bytes", "fig-pareto-arena"}
CHROMIUM = shutil.which("chromium")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="chromium is not on PATH (Debian: apt-get install -y --no-install-recommends chromium)",
)


def _trial(
    id: str, width: float, sparsity: float, quantization: str, status: str, numbers: tuple[Any, ...], missed: list[str]
) -> dict[str, Any]:
    size, arena, instructions, latency, validation, test, seconds = numbers
    return {
        "id": id,
        "plan": {"student_width": width, "sparsity": sparsity, "quantization": quantization, "precision": "int8"},
        "status": status,
        "reason": missed[0] if status != "done" and missed else "",  # a trial that ended early: its only miss
        "tflite_bytes": size,
        "arena_bytes": arena,
        "instructions_per_inference": instructions,
        "host_latency_ms": latency,
        "validation_metric": validation,
        "validation_log_loss": None if validation is None else round(3 * (1 - validation), 4),
        "test_metric": test,
        "budgets_met": status == "done" and not missed,
        "missed": missed,
        "seconds": seconds,
    }


SEARCH: dict[str, Any] = {
    "recipe": "mnist",
    "target": "cortex-m4",
    "metric": "accuracy",
    "higher_is_better": True,
    "budgets": {"model_bytes": 65536, "arena_bytes": 24576, "max_metric_drop": 0.01},
    "teacher": {"validation_metric": 0.976, "test_metric": 0.976},
    "algorithm": "grid",
    "trials_asked": 9,
    "seconds": 812.4,
    "trials": [
        _trial("t000", 1.0, 0.0, "qat", "done", (79120, 18432, 2.41e6, 0.41, 0.978, 0.975, 96.1), ["model_bytes over"]),
        _trial("t001", 1.0, 0.5, "qat", "done", (40960, 14336, 1.32e6, 0.27, 0.974, 0.972, 88.0), []),
        _trial("t002", 0.5, 0.0, "ptq", "done", (27300, 12288, 905e3, 0.19, 0.962, 0.958, 52.7), ["accuracy drop"]),
        _trial("t003", 0.5, 0.25, "qat", "done", (19624, 9328, 610e3, 0.14, 0.969, 0.970, 61.3), []),
        _trial("t004", 0.5, 0.5, "qat", "stopped", (12800, 7200, None, 0.11, 0.910, None, 30.8), ["after pruning"]),
        _trial("t005", 0.25, 0.0, "qat", "done", (9840, 30720, 420e3, 0.09, 0.951, 0.949, 41.0), ["arena", "drop"]),
        _trial("t006", 0.25, 0.5, "qat", "done", (6112, 5120, 233e3, 0.06, 0.941, 0.938, 39.5), ["accuracy drop"]),
        _trial("t007", 0.25, 0.75, "ptq", "failed", (None,) * 6 + (12.2,), ["TFLM cannot run the model: GATHER"]),
    ],
    "front_bytes": ["t006", "t005", "t003", "t001", "t000"],
    "front_arena": ["t006", "t003", "t001", "t000"],
    "chosen": "t003",
    "best_recipe": "best.toml",
}


class Page(HTMLParser):
    """What the checks need from a page: figures and whether each holds an SVG, every src/href, the
    script tags, and the tags left unclosed or closed out of order."""

    VOID = frozenset({"meta", "br", "hr", "img", "link", "input", "wbr", "source"})

    def __init__(self, text: str) -> None:
        super().__init__()
        self.figures: dict[str, bool] = {}
        self.links: list[str] = []
        self.scripts = 0
        self.errors: list[str] = []
        self.open: list[str] = []
        self.figure: str | None = None
        self.feed(text)
        self.close()
        self.errors += [f"<{tag}> never closed" for tag in self.open]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_startendtag(tag, attrs)
        if tag not in self.VOID:
            self.open.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        self.links += [v or "" for k, v in attrs if k in ("src", "href", "xlink:href", "srcset", "action", "data")]
        self.scripts += tag == "script"
        if tag == "figure":
            self.figure = values.get("id") or "?"
            self.figures[self.figure] = False
        elif tag == "svg" and self.figure is not None:
            self.figures[self.figure] = True

    def handle_endtag(self, tag: str) -> None:
        if not self.open or self.open[-1] != tag:
            self.errors.append(f"</{tag}> closes <{self.open[-1] if self.open else None}>")
            return
        self.open.pop()
        if tag == "figure":
            self.figure = None


def check_page(text: str, figures: set[str]) -> Page:
    """The page parses with every tag closed in order, fetches nothing, runs nothing, and each of
    ``figures`` is a <figure class="figure"> with an inline SVG; no section was left out."""
    page = Page(text)
    assert page.errors == []
    assert page.scripts == 0
    remote = [link for link in page.links if re.match(r"\s*(https?:)?//", link, re.IGNORECASE)]
    assert remote == []
    assert all(link.startswith("#") for link in page.links), page.links[:5]  # only the SVGs' own ids
    assert "url(http" not in text and "@import" not in text
    assert {name for name, svg in page.figures.items() if svg} >= figures, page.figures
    assert text.count('<figure class="figure" id="') == len(page.figures)
    assert "left out" not in text
    return page


def build_figures(report: dict[str, Any]) -> set[str]:
    """The figures a build's page has: all but the memory regions when the firmware was not linked
    (no cross compiler on this machine)."""
    return BUILD_FIGURES if (report.get("firmware") or {}).get("regions") else BUILD_FIGURES - {"fig-regions"}


def with_firmware_run(report: dict[str, Any]) -> dict[str, Any]:
    """``report`` as a --device qemu build writes it: a firmware run with both kernel families
    (the fields of results.FirmwareRun and KernelRun)."""
    report = copy.deepcopy(report)
    same = {"compared_outputs": 3590, "mismatched_outputs": 0, "max_lsb_diff": 0, "max_abs_diff": 0.0}
    kernels = [
        {"kernels": "cmsis-nn", "instructions": {"mean": 15066.0, "min": 14960.0, "max": 15160.0}},
        {"kernels": "reference", "instructions": {"mean": 48211.0, "min": 48100.0, "max": 48390.0}},
    ]
    for k, flash in zip(kernels, (80172, 61040), strict=True):
        k.update(flash_bytes=flash, arena_used_bytes=2220, vs_host_tflm=same)
    firmware = {
        "machine": "mps2-an386",
        "cpu": "cortex-m4",
        "kernels": "cmsis-nn",
        "model_source": "model_data.h, model_data.cc, model_ops.h as emitted",
        "tflm_commit": "90b983c2b3f1480642e040bbd2ddb37b998f3424",
        "inferences": 359,
        "instructions": kernels[0]["instructions"],
        "flash_bytes": 47404,
        "ram_bytes": 19552,
        "flash_by_part": {"model": 5952, "tflm": 16019, "cmsis-nn": 17476, "c library": 5843, "harness": 2047},
        "ram_by_part": {"arena": 2704, "tflm": 8, "c library": 101, "harness": 344, "stack": 16384},
        "arena_bytes": 2704,
        "arena_used_bytes": 2220,
        "kernel_comparison": kernels,
    }
    report["validation"]["device_run"] = {
        "device": "qemu",
        "measured_on": "qemu-system-arm -M mps2-an386 (cortex-m4, TFLM with CMSIS-NN kernels, emulated)",
        "emulated": True,
        "latency": {},
        "metrics": report["artifact"]["metrics"],
        "vs_host_tflm": same,
        "firmware": firmware,
    }
    return report


def as_regression(report: dict[str, Any]) -> dict[str, Any]:
    """``report`` as a regression build writes it: MAE and RMSE, no confusion matrix, an MAE budget."""
    report = copy.deepcopy(report)
    report["task"] = "regression"
    report["teacher"].update(accuracy=None, metrics={"mae": 43.82, "rmse": 53.23})
    report["artifact"].update(accuracy=None, metrics={"mae": 43.75, "rmse": 54.18})
    for key in ("confusion_matrix", "per_class_accuracy"):
        report["artifact"].pop(key, None)
    report["stage_metrics"] = {
        stage: {"mae": 43.8 - i, "rmse": 53.2 + i} for i, stage in enumerate(["baseline", "qat"])
    }
    mae = {"name": "mae_increase", "kind": "max", "unit": "units", "limit": 3.0, "actual": -0.06, "margin": 3.06}
    report["budgets"] = [b for b in report["budgets"] if b["name"] != "accuracy_drop"] + [{**mae, "ok": True}]
    return report


def older(report: dict[str, Any]) -> dict[str, Any]:
    """``report`` without the optional keys: as an older edgebuild, or a LiteRT target, writes it."""
    report = copy.deepcopy(report)
    for key in ("profiles", "stage_metrics", "pruning", "firmware", "npu", "qat_layers", "warnings", "budgets"):
        del report[key]
    for key in ("confusion_matrix", "per_class_accuracy", "metrics"):
        report["artifact"].pop(key)
    report["validation"].pop("ops")
    report["validation"]["device_run"] = {"device": "ssh", "measured_on": "pi@rpi4", "latency": {"mean_ms": 0.2}}
    return report


@pytest.fixture(scope="module")
def quick_report(clean_quick_build: Build) -> dict[str, Any]:
    """The report.json of the session's quick build (cortex-m4-relaxed, linked, host TFLM)."""
    report: dict[str, Any] = json.loads((clean_quick_build.out / "report.json").read_text())
    return report


@pytest.mark.slow
def test_the_build_writes_report_html(clean_quick_build: Build, quick_report: dict[str, Any]) -> None:
    text = (clean_quick_build.out / "report.html").read_text()
    assert text == build_html(quick_report)  # from the JSON as from the build's own dict: same bytes
    manifest = json.loads((clean_quick_build.out / "manifest.json").read_text())
    assert "report.html" in manifest["outputs"]
    check_page(text, build_figures(quick_report))
    assert "<h1>edgebuild report: quick for cortex-m4-relaxed</h1>" in text
    for layer in quick_report["pruning"]["layers"]:  # the figures are drawn, not just framed
        assert f"{layer['before']} → {layer['after']}" in text
    assert ("<h2>Latency</h2>" in text) != ("fig-firmware" in text)  # measured time, or a firmware run


@pytest.mark.slow
def test_hostile_names_are_escaped(quick_report: dict[str, Any]) -> None:
    report = copy.deepcopy(quick_report)
    report["recipe"] = HOSTILE
    report["warnings"] = ["</li></ul><script>alert(2)</script>"]
    report["pruning"]["layers"][0]["layer"] = "$x^2$ --> <b>dense</b>"  # not mathtext, not markup
    report["artifact"]["per_class_accuracy"] = {
        f"<i>{k}</i>": v for k, v in report["artifact"]["per_class_accuracy"].items()
    }
    text = build_html(report)
    check_page(text, build_figures(report))
    assert "<script" not in text and "<b>" not in text and "<i>" not in text
    assert (
        "<title>edgebuild report: a&quot;; &lt;script&gt;alert(1)&lt;/script&gt; for cortex-m4-relaxed</title>" in text
    )
    assert "&lt;/li&gt;&lt;/ul&gt;&lt;script&gt;alert(2)&lt;/script&gt;" in text


@pytest.mark.slow
def test_other_tasks_firmware_runs_and_older_reports(quick_report: dict[str, Any]) -> None:
    text = build_html(as_regression(quick_report))
    check_page(text, build_figures(quick_report) - {"fig-confusion"})
    assert "fig-confusion" not in text and "MAE 43.75, RMSE 54.18" in text

    text = build_html(with_firmware_run(quick_report))
    check_page(text, build_figures(quick_report) | {"fig-firmware"})
    assert "<td>reference</td>" in text and '<td class="n">15,066</td>' in text
    assert "<h2>Latency</h2>" not in text  # the firmware counts instructions, it measures no time

    text = build_html(older(quick_report))
    check_page(text, {"fig-sizes"})
    assert not {"fig-metrics", "fig-confusion", "fig-pruning", "fig-budgets", "fig-regions"} & set(Page(text).figures)
    assert "pi@rpi4" in text


def test_bare_and_malformed_dicts_give_a_page() -> None:
    for report in [{}, {"recipe": HOSTILE}, {"budgets": "x", "validation": {"ops": [1]}, "pruning": {"layers": [{}]}}]:
        assert Page(build_html(report)).errors == []
    for search in [{}, {"trials": [{}], "chosen": "t9"}, {"trials": "x", "front_bytes": None, "recipe": HOSTILE}]:
        text = search_html(search)
        assert Page(text).errors == [] and "left out" not in text and "<script" not in text


def test_search_page() -> None:
    text = search_html(SEARCH)
    assert text == search_html(copy.deepcopy(SEARCH))
    page = check_page(text, SEARCH_FIGURES)
    assert len(page.figures) == 2
    assert '<tr class="chosen"><td class="key">t003</td>' in text
    assert "the lowest validation log-loss (the figures show accuracy) (choose = most_accurate)" in text
    assert "<th>instr. / inference</th>" in text and "<th>why</th>" not in text  # the reasons are in "budgets"
    assert '<td class="notes">missed: arena; drop</td>' in text and '<td class="notes">after pruning</td>' in text
    assert "Every plan: precision int8." in text  # the same in every trial: said once, not a column
    assert text.count("<tr") == 1 + len(SEARCH["trials"])
    assert "8 of 9 trials run (6 done, 1 stopped, 1 failed)" in text and "2 meet every budget" in text
    assert "Teacher: validation accuracy 97.60%, test 97.60%." in text
    assert text.count("after pruning") == 1  # a stopped trial's reason, said once
    assert "<th>val. log-loss</th>" in text and '<td class="n">0.0930</td>' in text  # t003's
    host_only = copy.deepcopy(SEARCH)
    for t in host_only["trials"]:
        t["instructions_per_inference"] = None
    host_only["choose"] = "smallest"
    text = search_html(host_only)
    assert "instr. / inference" not in text and "the fewest bytes (choose = smallest)" in text
    hostile = copy.deepcopy(SEARCH)
    hostile["recipe"] = hostile["trials"][3]["id"] = hostile["chosen"] = HOSTILE
    text = search_html(hostile)
    check_page(text, SEARCH_FIGURES)
    assert "<script" not in text and "Chosen: a&quot;; &lt;script&gt;alert(1)&lt;/script&gt; (student_width" in text


# ----------------------------------------------------------------------------- headless Chromium


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Headless Chromium with its own profile, kept offline (no proxy it can reach, no name it can resolve)."""
    assert CHROMIUM is not None
    profile = tmp_path / "chromium-profile"
    env = {**os.environ, "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(profile), "XDG_CACHE_HOME": str(profile)}
    flags = ["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions"]
    flags += [f"--user-data-dir={profile}", "--proxy-server=127.0.0.1:9", "--host-resolver-rules=MAP * ~NOTFOUND"]
    flags += ["--disable-background-networking", "--disable-component-update", "--hide-scrollbars"]
    return subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=120, env=env, check=True)


def load(tmp_path: Path, html_file: Path) -> tuple[str, list[str]]:
    """The DOM after load, and every console message the page produced (Chromium logs console.log,
    console.error and uncaught exceptions alike as ``INFO:CONSOLE`` lines; a page without script has none)."""
    run = chromium(tmp_path, "--enable-logging=stderr", "--v=0", "--dump-dom", html_file.as_uri())
    return run.stdout, [line for line in run.stderr.splitlines() if re.search(r":CONSOLE[:(]", line)]


def screenshot(tmp_path: Path, html_file: Path, name: str, height: int) -> Path:
    folder = Path(os.environ.get("EDGEBUILD_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    png = folder / name
    chromium(tmp_path, f"--screenshot={png}", f"--window-size=1280,{height}", html_file.as_uri())
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    print(f"screenshot: {png}")
    return png


def render(tmp_path: Path, text: str, name: str, figures: set[str], height: int) -> None:
    """``text`` as ``name``.html in Chromium: its figures and their SVGs in the DOM, no console
    message, and a screenshot ``name``.png."""
    html_file = tmp_path / f"{name}.html"
    html_file.write_text(text)
    dom, console = load(tmp_path, html_file)
    assert console == []
    page = Page(dom)
    assert {name for name, svg in page.figures.items() if svg} >= figures, page.figures
    assert dom.count("<svg") == text.count("<svg") and page.scripts == 0
    screenshot(tmp_path, html_file, f"{name}.png", height)


@needs_chromium
def test_the_console_check_sees_errors(tmp_path: Path) -> None:
    html_file = tmp_path / "bad.html"
    html_file.write_text('<!DOCTYPE html><p>x</p><script>console.error("deliberate"); nothing();</script>')
    dom, console = load(tmp_path, html_file)
    assert "<p>x</p>" in dom
    assert len(console) == 2 and '"deliberate"' in console[0] and "ReferenceError" in console[1]


@needs_chromium
def test_search_html_in_chromium(tmp_path: Path) -> None:
    render(tmp_path, search_html(SEARCH), "search", SEARCH_FIGURES, 2000)


@needs_chromium
@pytest.mark.slow
def test_report_html_in_chromium(tmp_path: Path, quick_report: dict[str, Any]) -> None:
    figures = build_figures(quick_report)
    render(tmp_path, build_html(quick_report), "report", figures, 3400)
    render(tmp_path, build_html(with_firmware_run(quick_report)), "report-firmware", figures | {"fig-firmware"}, 3900)
