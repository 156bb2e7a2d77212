"""The paper's findings judged on the segmentation study's runs (``segmentation_study.py`` writes them into
``tables.md`` and ``summary.json``).

Each finding has a rule fixed before the full run (issue #19: no tuning until the paper's ordering appears). A
difference "holds" when it exceeds two standard errors in the paper's direction, is "reversed" beyond two standard
errors the other way, and is "unclear" in between. The standard error of a difference of two groups of runs is
sqrt(var_a / n_a + var_b / n_b) (sample variances over runs, i.e. over seeds × variants); a group with one run has no
variance, so nothing is judged from single runs: the verdict is then "unclear (one run)".

Stages: ``fusion.stage1-4`` of ``stlens:avos`` fuse res2–res5 of the paper's MATNet, so the paper's fusion layer
L is ``fusion.stage{L - 1}``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

STAGES = (1, 2, 3, 4)
WITHOUT_CC = ("concat-none", "gated-none")
WITH_CC = ("gated-uni", "gated-recip", "gated-recip-gate", "convex-recip")
CAMOUFLAGE = ("Reciprocal cross-connections with gated fusion are the most dynamic variant and segment camouflaged "
              "objects best.")
DOMINANT_CONTROL = {"dynamic": "random-least-dynamic", "static": "random-least-static"}


# -- per-run numbers ------------------------------------------------------------------------------------------------


def dims(run: dict[str, Any], stage: int) -> tuple[float, float] | None:
    """(dynamic, static) dims % of ``fusion.stage{stage}`` in one run, None where not measured."""
    layer = run.get("layers", {}).get(f"fusion.stage{stage}")
    if layer is None:
        return None
    return float(layer["percent"]["dynamic"]), float(layer["percent"]["static"])


def gap(run: dict[str, Any], stage: int) -> float | None:
    """Dynamic − static dims % of ``fusion.stage{stage}`` in one run."""
    pair = dims(run, stage)
    return None if pair is None else pair[0] - pair[1]


def imbalance(run: dict[str, Any]) -> float | None:
    """Mean over the fusion stages of |dynamic − static| dims % (0: balanced)."""
    pairs = [dims(run, k) for k in STAGES]
    return None if any(p is None for p in pairs) else float(np.mean([abs(d - s) for d, s in pairs]))


def dynamic_share(run: dict[str, Any]) -> float | None:
    """Mean over the fusion stages of the dynamic dims %."""
    pairs = [dims(run, k) for k in STAGES]
    return None if any(p is None for p in pairs) else float(np.mean([d for d, _ in pairs]))


def camouflage_miou(run: dict[str, Any], threshold: str = "0.5") -> float | None:
    value = run.get("eval", {}).get("camouflage", {}).get(f"miou@{threshold}")
    return None if value is None else float(value)


def davis_miou(run: dict[str, Any]) -> float | None:
    value = run.get("eval", {}).get("motion", {}).get("miou@0.5")
    return None if value is None else float(value)


# -- statistics -----------------------------------------------------------------------------------------------------


def values_of(runs: dict[str, dict[str, Any]], variants: tuple[str, ...] | list[str], fn) -> list[float]:
    out = []
    for run in runs.values():
        if run["variant"] in variants:
            value = fn(run)
            if value is not None and np.isfinite(value):
                out.append(float(value))
    return out


def difference(a: list[float], b: list[float]) -> dict[str, Any]:
    """mean(a) − mean(b) and its standard error (None when a group has fewer than 2 values)."""
    if not a or not b:
        return {"diff": None, "se": None, "n": [len(a), len(b)]}
    diff = float(np.mean(a) - np.mean(b))
    se = (float(np.sqrt(np.var(a, ddof=1) / len(a) + np.var(b, ddof=1) / len(b)))
          if len(a) > 1 and len(b) > 1 else None)
    return {"diff": diff, "se": se, "n": [len(a), len(b)], "mean": [float(np.mean(a)), float(np.mean(b))]}


def mean_se(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"mean": None, "se": None, "n": 0}
    se = float(np.std(values, ddof=1) / np.sqrt(len(values))) if len(values) > 1 else None
    return {"mean": float(np.mean(values)), "se": se, "n": len(values)}


def direction(value: float | None, se: float | None) -> str:
    """``holds`` (value > 2 SE), ``reversed`` (value < −2 SE), ``unclear`` (in between or no SE)."""
    if value is None:
        return "not measured"
    if se is None:
        return "unclear (one run)"
    if value > 2 * se:
        return "holds"
    if value < -2 * se:
        return "reversed"
    return "unclear"


def verdict_of(direction_: str) -> str:
    return {"holds": "holds", "reversed": "does not hold"}.get(direction_, direction_)


def _pm(d: dict[str, Any], digits: int = 3) -> str:
    if d.get("diff") is None:
        return "–"
    se = "" if d["se"] is None else f" ± {d['se']:.{digits}f} (SE)"
    return f"{d['diff']:+.{digits}f}{se}"


# -- the findings ---------------------------------------------------------------------------------------------------


def balance(runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    without, with_ = values_of(runs, WITHOUT_CC, imbalance), values_of(runs, WITH_CC, imbalance)
    d = difference(without, with_)  # positive: the cross-connected runs are more balanced
    per = {v: mean_se(values_of(runs, (v,), imbalance))["mean"] for v in (*WITHOUT_CC, *WITH_CC)}
    listed = ", ".join(f"{v} {m:.1f}" for v, m in per.items() if m is not None)
    return {"id": "balance", "finding": "Two-stream nets with cross-connections are more balanced between static and "
            "dynamic information.",
            "rule": "imbalance = mean over fusion.stage1-4 of |dynamic − static| dims %; holds when the runs without "
            "cross-connections (concat-none, gated-none) exceed those with them (gated-uni, gated-recip, "
            "gated-recip-gate, convex-recip) by more than 2 SE.",
            "verdict": verdict_of(direction(d["diff"], d["se"])), "numbers": d,
            "text": f"imbalance without − with cross-connections {_pm(d, 2)} points (n = {d['n'][0]} / {d['n'][1]} "
                    f"runs); per variant: {listed}"}


def camouflage(runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    avos = (*WITHOUT_CC, *WITH_CC)
    dyn = {v: mean_se(values_of(runs, (v,), dynamic_share)) for v in avos}
    moca = {v: mean_se(values_of(runs, (v,), camouflage_miou)) for v in avos}
    measured = [v for v in avos if dyn[v]["mean"] is not None and moca[v]["mean"] is not None]
    if "gated-recip" not in measured or len(measured) < 2:
        return {"id": "camouflage", "finding": CAMOUFLAGE, "rule": "", "verdict": "not measured",
                "numbers": {}, "text": "gated-recip and another variant must be measured and evaluated"}
    others = [v for v in measured if v != "gated-recip"]
    most_dynamic_other = max(others, key=lambda v: dyn[v]["mean"])
    best_other = max(others, key=lambda v: moca[v]["mean"])
    d_dyn = difference(values_of(runs, ("gated-recip",), dynamic_share),
                       values_of(runs, (most_dynamic_other,), dynamic_share))
    d_moca = difference(values_of(runs, ("gated-recip",), camouflage_miou),
                        values_of(runs, (best_other,), camouflage_miou))
    parts = [direction(d_dyn["diff"], d_dyn["se"]), direction(d_moca["diff"], d_moca["se"])]
    verdict = ("holds" if parts == ["holds", "holds"] else "does not hold" if "reversed" in parts
               else parts[0] if parts[0] == parts[1] else "unclear")
    xs = [dynamic_share(r) for r in runs.values() if r["variant"] in avos]
    ys = [camouflage_miou(r) for r in runs.values() if r["variant"] in avos]
    kept = [(x, y) for x, y in zip(xs, ys, strict=True) if x is not None and y is not None]
    rho = spearman([x for x, _ in kept], [y for _, y in kept]) if len(kept) > 2 else None
    ranking = ", ".join(f"{v} {moca[v]['mean']:.3f}" for v in sorted(measured, key=lambda v: -moca[v]["mean"]))
    return {"id": "camouflage", "finding": CAMOUFLAGE,
            "rule": "gated-recip's mean fusion dynamic dims % (stages 1-4) exceeds that of the next most dynamic "
            "variant, and its MoCA-analogue mIoU (threshold 0.5) that of the next best, each by more than 2 SE; "
            "Spearman's ρ over all avos runs between the two says whether being dynamic goes with camouflage.",
            "verdict": verdict, "numbers": {"dynamic": d_dyn, "moca": d_moca, "rho": rho,
                                            "next_dynamic": most_dynamic_other, "next_moca": best_other},
            "text": f"dynamic dims %: gated-recip − {most_dynamic_other} {_pm(d_dyn, 2)} ({parts[0]}); MoCA mIoU: "
                    f"gated-recip − {best_other} {_pm(d_moca)} ({parts[1]}); MoCA ranking {ranking}; Spearman ρ "
                    f"(fusion dynamic %, MoCA mIoU) over {len(kept)} runs "
                    f"{'–' if rho is None else f'{rho:+.2f}'}"}


def convex(runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    d = difference(values_of(runs, ("gated-recip",), davis_miou), values_of(runs, ("convex-recip",), davis_miou))
    return {"id": "convex", "finding": "Convex-gated fusion hurts accuracy.",
            "rule": "gated-recip's DAVIS-analogue test mIoU (threshold 0.5) exceeds convex-recip's (the same "
            "cross-connections) by more than 2 SE.",
            "verdict": verdict_of(direction(d["diff"], d["se"])), "numbers": d,
            "text": f"mIoU gated-recip − convex-recip {_pm(d)} (n = {d['n'][0]} / {d['n'][1]} seeds)"}


def stage_bias(runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    avos = (*WITHOUT_CC, *WITH_CC)
    per_stage, directions = {}, []
    for k in STAGES:
        values = values_of(runs, avos, lambda r, k=k: gap(r, k))
        m = mean_se(values)
        expected = 1.0 if k == 1 else -1.0  # the paper: fusion layer 2 dynamic-biased, 3-5 static-biased
        directions.append(direction(None if m["mean"] is None else expected * m["mean"], m["se"]))
        per_stage[f"fusion.stage{k}"] = m
    verdict = ("holds" if all(d == "holds" for d in directions) else
               "does not hold" if "reversed" in directions else
               "not measured" if all(d == "not measured" for d in directions) else "unclear")
    cells = "; ".join(f"{layer} {m['mean']:+.1f} ± {m['se'] or 0:.1f} ({d})"
                      for (layer, m), d in zip(per_stage.items(), directions, strict=True) if m["mean"] is not None)
    return {"id": "stage_bias", "finding": "Fusion layer 2 is dynamic-biased, fusion layers 3-5 static-biased "
            "(here fusion.stage1 and fusion.stage2-4).",
            "rule": "per stage, dynamic − static dims % over all avos runs: above 2 SE for fusion.stage1, below −2 SE "
            "for stages 2-4.", "verdict": verdict, "numbers": per_stage,
            "text": f"dynamic − static dims % (mean ± SE over runs; verdict in the paper's direction): {cells}"}


def masking(runs: dict[str, dict[str, Any]], bias: dict[str, Any]) -> dict[str, Any]:
    """Top-K% of the stage's dominant factor against the random-least control of that factor, per (stage, K); runs
    where the control could only repeat the opposite ranked selection (†) are left out of that cell."""
    cells, counts = [], {"holds": 0, "reversed": 0, "unclear": 0}
    for k in STAGES:
        layer = f"fusion.stage{k}"
        m = bias["numbers"].get(layer, {})
        if m.get("mean") is None:
            continue
        dominant = "dynamic" if m["mean"] > 0 else "static"
        control = DOMINANT_CONTROL[dominant]
        ks = sorted({x for r in runs.values() for x in r.get("masking", {}).get(layer, {}).get("drop_miou", {})},
                    key=float)
        for x in ks:
            diffs = []
            for run in runs.values():
                cell = run.get("masking", {}).get(layer)
                if cell is None or control in cell.get("degenerate", {}).get(x, []):
                    continue
                drops = cell["drop_miou"].get(x, {})
                if dominant in drops and control in drops:
                    diffs.append(drops[dominant] - drops[control])
            if not diffs:
                continue
            ms = mean_se(diffs)
            d = direction(ms["mean"], ms["se"])
            counts[d if d in counts else "unclear"] += 1
            cells.append({"layer": layer, "k": x, "dominant": dominant, "n": ms["n"], "diff": ms["mean"],
                          "se": ms["se"], "direction": d})
    judged = sum(counts.values())
    verdict = ("not measured" if judged == 0 else
               "holds" if counts["holds"] * 2 >= judged and counts["reversed"] == 0 else
               "does not hold" if counts["holds"] == 0 and counts["reversed"] > 0 else "unclear")
    text = "; ".join(f"{c['layer']} K={c['k']}% ({c['dominant']}) {_pm(c)} {c['direction']}" for c in cells)
    return {"id": "masking", "finding": "Masking the top-K% units of a layer's dominant factor hurts more than "
            "masking the random-least control (K% drawn from the (K+5)% least biased to that factor).",
            "rule": "per fusion stage and K: drop in mIoU of the dominant factor's top-K% minus that of its "
            "random-least control, per run (cells marked † left out); holds when at least half of the (stage, K) "
            "cells exceed 2 SE and none is reversed, does not hold when none exceeds and some are reversed.",
            "verdict": verdict, "numbers": {"cells": cells, "counts": counts},
            "text": f"{counts['holds']} of {judged} cells hold, {counts['reversed']} reversed, {counts['unclear']} "
                    f"unclear: {text}"}


def spearman(x: list[float], y: list[float]) -> float | None:
    """Spearman's rank correlation (average ranks for ties); None when a variable is constant."""
    def ranks(v: list[float]) -> np.ndarray:
        arr = np.asarray(v, dtype=float)
        order = arr.argsort(kind="stable")
        r = np.empty(len(arr))
        r[order] = np.arange(len(arr), dtype=float)
        for value in np.unique(arr):
            tied = arr == value
            r[tied] = r[tied].mean()
        return r

    rx, ry = ranks(x), ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return None
    return float(np.corrcoef(rx, ry)[0, 1])


def findings(runs: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Every finding with its rule, verdict, numbers and a line of text, from the study's per-run summary."""
    bias = stage_bias(runs)
    return [balance(runs), camouflage(runs), convex(runs), bias, masking(runs, bias)]


def findings_markdown(found: list[dict[str, Any]]) -> list[str]:
    lines = ["## The paper's findings here (rules fixed before the full run)", "",
             "Verdicts: holds / does not hold (reversed beyond 2 SE) / unclear (within 2 SE, or one run) / not "
             "measured. SE: standard error over runs (seeds × variants).", ""]
    for f in found:
        lines += [f"- **{f['finding']}** — **{f['verdict']}**. {f['text']}.", f"  Rule: {f['rule']}"]
    return [*lines, ""]
