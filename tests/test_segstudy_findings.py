"""benchmarks/segstudy_findings.py: each paper finding's rule, checked on hand-made runs with hand-computed numbers."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from segstudy_findings import findings, spearman  # noqa: E402


def run(variant: str, seed: int, dyn: float | list[float] = 20.0, static: float | list[float] = 30.0,
        davis: float = 0.7, moca: float = 0.5, masking: dict | None = None) -> tuple[str, dict]:
    dyn = dyn if isinstance(dyn, list) else [dyn] * 4
    static = static if isinstance(static, list) else [static] * 4
    layers = {f"fusion.stage{k}": {"percent": {"dynamic": d, "static": s}}
              for k, d, s in zip((1, 2, 3, 4), dyn, static, strict=True)}
    entry = {"variant": variant, "seed": seed, "layers": layers,
             "eval": {"motion": {"miou@0.5": davis}, "camouflage": {"miou@0.5": moca}}}
    if masking is not None:
        entry["masking"] = masking
    return f"{variant}-s{seed}", entry


def by_id(runs: list[tuple[str, dict]]) -> dict[str, dict]:
    return {f["id"]: f for f in findings(dict(runs))}


def test_balance_compares_the_imbalance_without_and_with_cross_connections():
    # |D − S| = 30, 34 without; 10, 14 with → diff 20, SE sqrt(8/2 + 8/2) = 2.83: holds
    runs = [run("concat-none", 0, 10, 40), run("concat-none", 1, 10, 44),
            run("gated-uni", 0, 20, 30), run("gated-uni", 1, 20, 34)]
    f = by_id(runs)["balance"]
    assert f["verdict"] == "holds"
    assert f["numbers"]["diff"] == pytest.approx(20.0) and f["numbers"]["se"] == pytest.approx(math.sqrt(8))
    swapped = [run("gated-uni", 0, 10, 40), run("gated-uni", 1, 10, 44),
               run("concat-none", 0, 20, 30), run("concat-none", 1, 20, 34)]
    assert by_id(swapped)["balance"]["verdict"] == "does not hold"
    assert by_id(runs[::2])["balance"]["verdict"] == "unclear (one run)"


def test_convex_compares_davis_miou_with_gated_fusion_at_the_same_cross_connections():
    good = [run("gated-recip", s, davis=v) for s, v in enumerate((0.70, 0.72, 0.74))]
    worse = [run("convex-recip", s, davis=v) for s, v in enumerate((0.60, 0.61, 0.62))]
    f = by_id(good + worse)["convex"]
    assert f["verdict"] == "holds"
    assert f["numbers"]["diff"] == pytest.approx(0.11)
    assert f["numbers"]["se"] == pytest.approx(math.sqrt(0.0004 / 3 + 0.0001 / 3))
    close = [run("convex-recip", s, davis=v) for s, v in enumerate((0.71, 0.73, 0.72))]
    assert by_id(good + close)["convex"]["verdict"] == "unclear"
    assert by_id(good)["convex"]["verdict"] == "not measured"


def test_stage_bias_wants_stage1_dynamic_and_stages_2_to_4_static():
    paper = [run("gated-uni", s, dyn=[30 + s, 10, 10, 10], static=[10, 30 + s, 30, 30 + s]) for s in range(3)]
    f = by_id(paper)["stage_bias"]
    assert f["verdict"] == "holds"
    assert f["numbers"]["fusion.stage1"]["mean"] == pytest.approx(21.0)  # 20, 21, 22
    assert f["numbers"]["fusion.stage1"]["se"] == pytest.approx(1 / math.sqrt(3))
    flipped = [run("gated-uni", s, dyn=[10, 10, 10, 10], static=[30 + s, 30, 30, 30 + s]) for s in range(3)]
    assert by_id(flipped)["stage_bias"]["verdict"] == "does not hold"  # stage1 static-biased: reversed


def masking_cell(dominant: float, control: float, degenerate: bool = False) -> dict:
    return {"fusion.stage4": {"drop_miou": {"25": {"static": dominant, "random-least-static": control,
                                                   "dynamic": 0.0, "random-least-dynamic": 0.0}},
                              "degenerate": {"25": ["random-least-static"] if degenerate else []}}}


def test_masking_compares_the_dominant_factor_with_its_control_and_leaves_out_degenerate_cells():
    # stage 4 static-biased (D 10 < S 30): static top-K against random-least-static
    runs = [run("gated-uni", 0, masking=masking_cell(0.30, 0.10)),
            run("gated-uni", 1, masking=masking_cell(0.32, 0.10)),
            run("gated-recip", 0, masking=masking_cell(0.34, 0.10)),
            run("gated-recip", 1, masking=masking_cell(-5.0, 0.10, degenerate=True))]  # left out
    runs = [(name, entry | {"layers": {k: {"percent": {"dynamic": 10.0, "static": 30.0}} for k in entry["layers"]}})
            for name, entry in runs]
    f = by_id(runs)["masking"]
    (cell,) = f["numbers"]["cells"]
    assert cell["dominant"] == "static" and cell["n"] == 3
    assert cell["diff"] == pytest.approx(0.22)  # (0.20 + 0.22 + 0.24) / 3
    assert cell["se"] == pytest.approx(0.02 / math.sqrt(3))
    assert f["verdict"] == "holds" and f["numbers"]["counts"] == {"holds": 1, "reversed": 0, "unclear": 0}
    reversed_ = [(n, e | {"masking": masking_cell(0.0 + i / 100, 0.3)}) for i, (n, e) in enumerate(runs)]
    assert by_id(reversed_)["masking"]["verdict"] == "does not hold"


def test_camouflage_needs_gated_recip_most_dynamic_and_best_on_moca():
    runs = [run("gated-recip", s, dyn=30 + s, moca=0.60 + s / 100) for s in range(3)]
    runs += [run("concat-none", s, dyn=10 + s, moca=0.40 + s / 100) for s in range(3)]
    runs += [run("gated-uni", s, dyn=20 + s, moca=0.50 + s / 100) for s in range(3)]
    f = by_id(runs)["camouflage"]
    assert f["verdict"] == "holds"
    assert f["numbers"]["next_dynamic"] == "gated-uni" and f["numbers"]["next_moca"] == "gated-uni"
    assert f["numbers"]["dynamic"]["diff"] == pytest.approx(10.0)
    assert f["numbers"]["rho"] == pytest.approx(1.0)
    beaten = runs[:6] + [run("gated-uni", s, dyn=20 + s, moca=0.70 + s / 100) for s in range(3)]
    g = by_id(beaten)["camouflage"]
    assert g["verdict"] == "does not hold" and g["numbers"]["next_moca"] == "gated-uni"


def test_spearman_by_hand():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # ties get average ranks: x ranks 0, 1.5, 1.5, 3; y ranks 0, 1, 2, 3 → Pearson of the ranks
    x, y = [0.0, 1.5, 1.5, 3.0], [0.0, 1.0, 2.0, 3.0]
    mx, my = sum(x) / 4, sum(y) / 4
    cov = sum((a - mx) * (b - my) for a, b in zip(x, y, strict=True))
    expected = cov / math.sqrt(sum((a - mx) ** 2 for a in x) * sum((b - my) ** 2 for b in y))
    assert spearman([5, 7, 7, 9], [1, 2, 3, 4]) == pytest.approx(expected)
    assert spearman([1, 1, 1], [1, 2, 3]) is None
