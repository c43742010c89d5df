"""RESULTS.md from a bench run's results: the machine, every goal met or not (and why not),
then each benchmark's tables.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _difference_se(accuracy: float, samples: int) -> float:
    """Standard error, in points, of the difference of two accuracies near ``accuracy`` on ``samples`` images."""
    return float(np.sqrt(2 * accuracy * (1 - accuracy) / samples) * 100)


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.4g}{unit}"
    if isinstance(value, int):
        return f"{value:,}{unit}"
    return f"{value}{unit}"


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.2%}"


def _mb(value: int | None) -> str:
    return "—" if value is None else f"{value / 2**20:,.0f} MB"


def _cell(text: str) -> str:
    """``text`` safe inside a markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def goal_lines(goals: list[dict[str, Any]]) -> list[str]:
    """The "Goals" section from results.json's ``goals`` (made by ``goals.judge_goals`` from the goal table)."""
    met = sum(g["met"] for g in goals)
    unmeasured = sum(g["value"] is None for g in goals)
    lines = [
        "## Goals",
        "",
        f"{met} of {len(goals)} goals met; {unmeasured} could not be measured in this run and count as unmet.",
        "",
        "| goal | measured | limit | met | why not |",
        "|---|---|---|---|---|",
    ]
    for g in goals:
        limit = f"{'≤' if g['comparison'] == 'max' else '≥'} {_fmt(g['limit'], g['unit'])}"
        lines.append(
            f"| {g['measures']} | {_fmt(g['value'], g['unit'])} | {limit} | {'yes' if g['met'] else '**no**'}"
            f" | {_cell(g['reason'])} |"
        )
    return lines


def markdown(result: dict[str, Any]) -> str:
    """RESULTS.md from ``result`` (what results.json holds): the machine, every goal, then each part's tables."""
    m = result["machine"]
    v = ", ".join(f"{k} {val}" for k, val in m["versions"].items())
    lines = [
        "# edgebuild benchmarks",
        "",
        f"Measured {result['date']} with `{result['command']}` ({'quick smoke run' if result['quick'] else 'full run'},"
        f" {result['wall_s'] / 60:.1f} min).",
        f"Machine: {m['cpu']}, {m['cores']} cores, {_mb(m['memory_bytes'])} RAM, {m['platform']},"
        f" Python {m['python']}.",
        f"Versions: {v}.",
        *(
            ["", "Parts run: " + ", ".join(f"{part} {date}" for part, date in result["parts_run"].items()) + "."]
            if "parts_run" in result
            else []
        ),
        "",
        *goal_lines(result["goals"]),
    ]

    s = result["against_script"]
    lines += ["", "## 1. Against the hand-written TF-MOT script", ""]
    if "error" in s:
        lines.append(f"Failed: {s['error']}")
    else:
        lines += [
            f"`bench/tfmot_script.py` follows the TF-MOT tutorials on the `{result['recipe']}` recipe's data, deployed"
            " model and epochs; edgebuild builds recipe `tfmot-stages` (the same stages: train, unstructured"
            " `prune_low_magnitude` to 50 %, prune-preserving QAT, int8) for rpi4. Both cold, fresh processes,"
            " one after the other.",
            "",
            "The full plan (distillation, channel pruning) is the recipe as shipped, for rpi4. Every row is one"
            " seed of the whole pipeline (initialisation, shuffling).",
            "",
            "| seed | | wall | peak memory | int8 bytes | accuracy |",
            "|---|---|---|---|---|---|",
        ]
        who = (("script", "script"), ("edgebuild", "edgebuild, same stages"), ("full_plan", "edgebuild, full plan"))
        for run in s["runs"]:
            lines += [
                f"| {run['seed']} | {label} | {run[key]['wall_s']} s | {_mb(run[key]['peak_rss_bytes'])}"
                f" | {run[key]['tflite_bytes']:,} | {_pct(run[key]['accuracy'])} |"
                for key, label in who
            ]
        n, acc = s["test_samples"], s["mean_accuracy"]["script"]
        means = ", ".join(f"{label} {_pct(s['mean_accuracy'][key])}" for key, label in who)
        lines += [
            "",
            f"Mean accuracy over the seeds: {means}. Accuracy is on the {n:,} held-out images: one image is"
            f" {100 / n:.2g} point, and the standard error of a difference between two single runs near {acc:.1%}"
            f" is about {_difference_se(acc, n):.1f} point (before seed-to-seed variation).",
            f"edgebuild's stage times, same stages, seed {s['runs'][0]['seed']}:"
            f" {_stage_list(s['runs'][0]['edgebuild']['stages'])}.",
        ]

    t = result["every_target"]
    lines += [
        "",
        f"## 2. The `{result['recipe']}` recipe on every target",
        "",
        "Float latency is the same pruned model converted to float32; both on LiteRT's default kernels (XNNPACK)"
        f" on this machine (SIMD: {', '.join(m['simd']) or 'none found'}), one thread, median of 1000 invocations.",
        "",
        "| target | teacher bytes | teacher acc. | artifact bytes | artifact acc. | drop | sparsity | TFLM arena"
        " | float / int8 latency | compression |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    rows = dict(t["rows"])
    if t.get("cortex_m4_unpruned") and "error" not in t["cortex_m4_unpruned"]:
        rows["cortex-m4, unpruned"] = t["cortex_m4_unpruned"]
    for name, row in rows.items():
        if "error" in row:
            lines.append(f"| {name} | {row['error']} |||||||||")
            continue
        latency = (
            f"{row['float_latency_ms']:.4f} / {row['int8_latency_ms']:.4f} ms ({row['int8_speedup']}×)"
            if row["int8_speedup"]
            else _fmt(row["int8_latency_ms"], " ms int8")
        )
        lines.append(
            f"| {name} | {row['teacher_bytes']:,} | {_pct(row['teacher_accuracy'])} | {row['artifact_bytes']:,}"
            f" | {_pct(row['artifact_accuracy'])} | {row['drop_points']} pt | {row['sparsity']:.0%}"
            f" | {_fmt(row['arena_bytes'], ' B')}"
            f" | {latency} | {row['compression']}× |"
        )
    if "rebuild" in t:
        r = t["rebuild"]
        lines += [
            "",
            f"Rebuilds: cold {r['first_target']} {r['cold_s']} s; no-op rebuilds"
            f" {', '.join(str(x) for x in r['no_op_s'])} s (median {r['no_op_median_s']} s); then"
            f" {r['second_target']} sharing teacher and student {r['second_target_s']} s"
            f" ({r['second_target_ratio']}× cold).",
        ]

    k = result.get("kws")
    lines += ["", "## 3. MLPerf Tiny keyword spotting (external reference)", ""]
    if not k:
        lines.append("Not run: pass `--kws PATH` (the mlperf-tiny-kws folder).")
    elif "error" in k:
        lines.append(f"Failed: {k['error']}")
    else:
        ours, ref = k["edgebuild"], k["reference"]
        lines += [
            f"Recipe `bench/kws/kws.toml`: the reference DS-CNN (Keras SavedModel) imported and post-training"
            f" quantized for cortex-m4, calibrated on {k['calibration_inputs']} of the 1000 EEMBC inputs; both models"
            f" scored with TFLM on the other {k['held_out_inputs']}.",
            "",
            "| | int8 bytes | TFLM arena | accuracy, held-out half (TFLM) |",
            "|---|---|---|---|",
            *(
                f"| {who} | {x['tflite_bytes']:,} | {x['arena_bytes']:,} B | {_pct(x['accuracy_tflm_held_out'])} |"
                for who, x in (("edgebuild", ours), ("reference int8", ref))
            ),
            "",
            f"Reference on all 1000 inputs with LiteRT: {_pct(ref['accuracy_litert_all_1000'])} (published: 90.2 %)."
            f" The float model on the held-out half: {_pct(ours['float_accuracy_held_out'])}."
            f" edgebuild's build: {ours['wall_s']} s. The float inputs are the int8 inputs dequantized with the"
            f" reference model's input scale {k['input_scale']:.6g} and zero point {k['input_zero_point']}.",
        ]
        fw = ours.get("firmware")
        if fw:
            lines += [
                "",
                f"The firmware (`--device qemu --compare-kernels`) on {fw['machine']}, {fw['inferences']} inputs;"
                " instructions per inference counted by QEMU (-icount), not cycles:",
                "",
                "| kernels | instructions per inference | firmware flash | outputs differing from host TFLM |",
                "|---|---|---|---|",
                *(
                    f"| {name} | {k['instructions_mean']:,.0f} | {k['flash_bytes']:,} B "
                    f"| {k['mismatched_vs_host_tflm']} |"
                    for name, k in fw["kernels"].items()
                ),
            ]
        else:
            lines += ["", "The firmware was not run: set `EDGEBUILD_THIRD_PARTY` to TFLM's archives to run it."]

    lines += _search_lines(result.get("search"))
    lines += ["", "## 4. Build cost", "", f"The cold `{result['recipe']}` build for rpi4, per stage:", ""]
    lines += ["| stage | seconds | what it did |", "|---|---|---|"]
    lines += [f"| {s['name']} | {s['seconds']:.1f} | {s['summary']} |" for s in t.get("cold_stages", [])]
    lines += ["", f"Peak memory of that build process: {_mb(t.get('cold_peak_memory_bytes'))}."]
    c = result.get("build_cost")
    if not c:
        return "\n".join(lines) + "\n"
    stage_names = next((list(row["stages"]) for row in c["rows"].values() if "stages" in row), [])  # build order
    lines += [
        "",
        f"Growth with dataset size and width: cold builds (no cache) for rpi4 of the same plan with"
        f" {c['epoch_fraction']:.0%} of its epochs ({_plan(c['plan'])}); larger datasets are the training images"
        " plus copies shifted by up to one pixel, the held-out split unchanged.",
        "",
        "| variant | train images | wall | peak memory | " + " | ".join(stage_names) + " |",
        "|---|---|---|---|" + "---|" * len(stage_names),
    ]
    for name, row in c["rows"].items():
        if "error" in row:
            lines.append(f"| {name} | {row['error']} |")
            continue
        stages = " | ".join(f"{row['stages'].get(n, 0):.1f}" for n in stage_names)
        lines.append(
            f"| {name} | {row['train_images']:,} | {row['wall_s']} s | {_mb(row['peak_rss_bytes'])} | {stages} |"
        )
    return "\n".join(lines) + "\n"


def _search_lines(part: dict[str, Any] | None) -> list[str]:
    """Part 5: edgebuild search for cortex-m4 against the script, per seed."""
    lines = ["", "## 5. `edgebuild search` against the TF-MOT script (cortex-m4)", ""]
    if not part:
        return [*lines, "Not run (`python bench/run.py --only search` runs it alone)."]
    if "error" in part:
        return [*lines, f"Failed: {part['error']}"]
    se = part["accuracy_diff_standard_error"]
    lines += [
        f"A cold Optuna search of {part['trials_per_search']} trials per seed (its own stage cache: the teacher"
        " trained once per search), decided on the validation split; the chosen plan ("
        + (
            "of those meeting every budget, the smallest, then the most accurate on validation: `choose = smallest`,"
            " the rule when this was measured; the default is now most accurate first"
            if part.get("choose") == "smallest"
            else "of those meeting every budget, the lowest validation log-loss, then the most accurate on"
            " validation, then the smallest: `choose = most_accurate`"
        )
        + ") scored on the test split, against the script's int8 model of the same seed; then its recipe"
        " (`best.toml`) built for cortex-m4, which judges every budget on the test split.",
        "",
        "| seed | chosen plan | bytes | arena | val. accuracy | test accuracy | script bytes | script accuracy"
        " | trials (stopped, feasible) | search wall | cold build | best.toml built |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in part["runs"]:
        c, s = r["chosen"], r["script"]
        lines.append(
            f"| {r['seed']} | {c['plan']} | {c['tflite_bytes']:,} | {c['arena_bytes']:,} | "
            f"{_pct(c['validation_accuracy'])} | {_pct(c['accuracy'])} | {s['tflite_bytes']:,} | "
            f"{_pct(s['accuracy'])} | {r['trials']} ({r['stopped_early']}, {r['feasible']}) | {r['wall_s']} s | "
            f"{r.get('cold_build_s', '')} s | {r.get('best_recipe_build', 'not run')} |"
        )
    lines += [
        "",
        f"Mean bytes ratio {part['bytes_ratio']}; accuracy difference {part['accuracy_diff_points']:+.2f} points"
        + (f" (standard error {se:.2f} over the seeds)" if se is not None else "")
        + f"; a cold build for cortex-m4 took {part['cold_build_s']} s (mean over the seeds), a search"
        f" {part['wall_ratio']}x that."
        + (
            f" The chosen recipe built within every budget for {part['best_recipe_builds']} of {len(part['runs'])}"
            " seeds."
            if "best_recipe_builds" in part
            else ""
        ),
    ]
    return lines


def _stage_list(stages: dict[str, float]) -> str:
    return ", ".join(f"{name} {seconds:.1f} s" for name, seconds in stages.items())


def _plan(plan: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v['epochs']} epochs" for k, v in plan.items() if v)
