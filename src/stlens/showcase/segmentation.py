"""``stlens demo --segmentation``: the two bundled segmenters of the segmentation study, measured and visualized.

``bundled:avos-concat-none`` (concatenation, no cross-connection) and ``bundled:avos-gated-recip`` (gated fusion,
reciprocal cross-connections) were trained on the DAVIS analogue (``synth:motion?task=segment``) by
``benchmarks/segmentation_study.py`` and bundled by ``benchmarks/bundle_segmenters.py``. The demo measures every
stream and fusion stage of both on held-out pairs of that world, then optimizes an RGB video and a flow stack jointly
for the most dynamic and the most static units of one fusion stage (activation maximization of a two-stream model).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from stlens.files import versioned, write_json, write_text
from stlens.showcase import DemoRow, _measure_one, demo_table

#: the bundled segmenters the demo shows (their model specs are in their records)
SEGMENT_MODELS = ("avos-concat-none", "avos-gated-recip")
#: held-out pairs of the DAVIS analogue (the study measured seed 1 of the test split too)
SEGMENT_DATA = {"segment": "synth:motion?task=segment&frames=8&size=64&split=test&seed=1&n=512"}
#: natural clips the visualized units are compared with (other clips of the same world)
NATURAL_DATA = "synth:motion?task=segment&frames=8&size=64&split=test&seed=0&n=64"
#: the fusion stage whose units are visualized
VISUALIZED_LAYER = "fusion.stage3"


def run_segmentation_demo(out: str | Path = "runs/demo-segmentation", pairs: int = 64, steps: int = 128,
                          units: int = 2, progress: bool = True, report: bool = True) -> dict[str, Any]:
    """Measure and visualize the bundled segmenters into ``out`` (a ``demo`` run folder, re-runnable): per model
    ``<name>/segment`` (a measure run) and ``<name>/visualize`` (the ``units`` most dynamic and most static units of
    ``fusion.stage3``, RGB + flow optimized together for ``steps`` steps); summary.md/.json; report.html."""
    from stlens.runs import RunFolder

    run = RunFolder(out, "demo")
    run.resume()  # a demo folder is re-runnable; a folder holding another verb's run is refused
    try:
        summary = _run(Path(out), pairs, steps, units, progress, report)
        run.mark(["summary.md", "summary.json", *(["report.html"] if report else [])], "complete",
                 info={"models": list(SEGMENT_MODELS)})
        return summary
    finally:
        run.release()


def _run(out: Path, pairs: int, steps: int, units: int, progress: bool, report: bool) -> dict[str, Any]:
    import stlens
    from stlens.models.bundled import bundled_info

    started = time.perf_counter()
    rows: list[DemoRow] = []
    visuals: list[dict[str, Any]] = []
    for name in SEGMENT_MODELS:
        spec = bundled_info(name)["model"]  # an unknown or missing checkpoint fails here, before any work
        for data_name, data in SEGMENT_DATA.items():
            if progress:
                print(f"stlens demo: {name} ({spec}) on {data_name} pairs ...", flush=True)
            rows.extend(_measure_one(name, spec, data_name, data, pairs, out, progress, "dis"))
        if progress:
            print(f"stlens demo: {name}: RGB + flow for the {units} most dynamic and most static units of "
                  f"{VISUALIZED_LAYER} ({steps} steps) ...", flush=True)
        result = stlens.visualize(spec, [f"top-dynamic:{units}", f"top-static:{units}"], layer=VISUALIZED_LAYER,
                                  weights=f"bundled:{name}", from_run=out / name / "segment", steps=steps,
                                  data=NATURAL_DATA, natural_clips=8, seed=0, out=out / name / "visualize",
                                  overwrite=True, progress=progress)
        visuals.extend(visual_row(name, t.to_dict()) for t in result.targets)
    seconds = time.perf_counter() - started
    fusion = [r for r in rows if r.layer.startswith("fusion.")]
    text = (f"# stlens demo: the bundled segmenters\n\nFusion stages on held-out pairs of the DAVIS analogue "
            f"({pairs} per factor):\n\n{demo_table(fusion)}\n\nUnits of {VISUALIZED_LAYER}, RGB and flow optimized "
            f"together ({steps} steps):\n\n{visual_table(visuals)}\n\nEvery layer: {out}/<model>/segment; videos "
            f"and flows: {out}/<model>/visualize; {seconds:.0f} s\n")
    write_text(out / "summary.md", text)
    summary = {"rows": [r.as_dict() for r in rows], "visualized": visuals, "pairs": pairs, "steps": steps,
               "data": SEGMENT_DATA, "natural": NATURAL_DATA, "seconds": round(seconds, 1)}
    write_json(out / "summary.json", versioned(summary))
    if report:
        from stlens.report import build_report

        if progress:
            print("stlens demo: writing report.html ...", flush=True)
        build_report([out], out / "report.html", title="stlens demo: the bundled segmenters")
    return summary


def visual_row(model: str, target: dict[str, Any]) -> dict[str, Any]:
    """The numbers of one visualized unit worth a table row."""
    measured = target.get("measured") or {}
    flow = target.get("input_flow") or {}
    return {"model": model, "target": target["target"], "class": measured.get("class"),
            "r_dynamic": measured.get("r_dynamic"), "r_static": measured.get("r_static"),
            "objective": target["objective_value"], "ratio_to_natural": target["ratio_to_natural_mean"],
            "flow_px": flow.get("mean_magnitude"), "frame_change": target.get("frame_change_grey"),
            "status": target["status"]}


def visual_table(visuals: list[dict[str, Any]]) -> str:
    def num(v: float | None, digits: int = 2) -> str:
        return "-" if v is None else f"{v:.{digits}f}"

    lines = ["| model | unit | measured class | r dynamic | r static | × natural mean | flow px | frame change |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for v in visuals:
        lines.append(f"| {v['model']} | {v['target']} | {v['class'] or '-'} | {num(v['r_dynamic'])} | "
                     f"{num(v['r_static'])} | {num(v['ratio_to_natural'], 1)} | {num(v['flow_px'])} | "
                     f"{num(v['frame_change'])} |")
    return "\n".join(lines)
