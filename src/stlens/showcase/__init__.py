"""``stlens demo``: measure the bundled checkpoints on synthetic pairs and on the real sample videos, and compare.

The bundled models were trained in the synthetic world (``make checkpoints``): the ``*-motion`` ones on
``synth:motion`` (class = motion direction), the ``*-appearance`` ones on ``synth:appearance`` (class = object
texture). A measurement that works must find the motion-trained 3-D net more dynamic than its appearance-trained twin
and than the C2D net, which cannot see frame order before its final pooling.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from stlens.files import versioned, write_json, write_text

#: bundled checkpoint → zoo model
DEMO_MODELS = {
    "i3d-motion": "stlens:i3d",
    "i3d-appearance": "stlens:i3d",
    "c2d-motion": "stlens:c2d",
    "c2d-appearance": "stlens:c2d",
    "twostream-motion": "stlens:twostream",
}
#: short name → data spec (the synth pairs come from the motion world's held-out split: random appearance)
DEMO_DATA = {"synth": "synth:motion?split=test&n=512&seed=0", "sample": "sample:"}


@dataclass
class DemoRow:
    model: str
    data: str
    layer: str
    channels: int
    dynamic: float
    dynamic_ci: list[float] | None
    static: float
    static_ci: list[float] | None
    bias: float

    def as_dict(self) -> dict[str, Any]:
        return dict(vars(self))


def _measure_one(name: str, spec: str, data_name: str, data: str, pairs: int, out: Path, progress: bool,
                 flow_method: str) -> list[DemoRow]:
    import stlens
    from stlens.core.handle import takes_two_inputs

    torch.manual_seed(0)
    handle = stlens.load_model(spec, weights=f"bundled:{name}")
    two_stream = takes_two_inputs(handle.module)
    source = stlens.open_data(data)
    pair_source = stlens.make_pairs(source, handle.input, pairs, seed=0, flow=flow_method if two_stream else None)
    result = stlens.measure(handle, pair_source, "default", batch_size=8, bootstrap=200, seed=0, progress=progress,
                            meta={"data": data, "stylizer": pair_source.stylizer,
                                  "flow": getattr(pair_source, "flow_method", None)})
    config = result.config | {"command": "demo", "model": spec, "weights": f"bundled:{name}", "data": data,
                              "pairs": pairs}
    result.save(out / name / data_name, config, overwrite=True)  # the demo replaces its own earlier runs
    return [DemoRow(name, data_name, r.layer, r.channels, r.percent["dynamic"], r.ci95["dynamic"],
                    r.percent["static"], r.ci95["static"], r.bias) for r in result.layers]


def _ci(v: list[float] | None) -> str:
    return f"[{v[0]:.1f}, {v[1]:.1f}]" if v else "-"


def demo_table(rows: list[DemoRow]) -> str:
    """A markdown table: model × data × layer with dynamic and static % and their 95% CIs."""
    lines = ["| model | data | layer | C | dynamic % | 95% CI | static % | 95% CI | bias |",
             "|---|---|---|---:|---:|---|---:|---|---:|"]
    for r in rows:
        lines.append(f"| {r.model} | {r.data} | {r.layer} | {r.channels} | {r.dynamic:.1f} | {_ci(r.dynamic_ci)} | "
                     f"{r.static:.1f} | {_ci(r.static_ci)} | {r.bias:.2f} |")
    return "\n".join(lines)


def last_stage(rows: list[DemoRow], model: str, data: str) -> DemoRow | None:
    """The deepest measured latent of a model before its head (the last row of its default layers)."""
    found = [r for r in rows if r.model == model and r.data == data]
    return found[-1] if found else None


def last_stage_checks(rows: list[DemoRow]) -> list[dict[str, Any]]:
    """i3d-motion against each other bundled net at the last stage, per data source: more dynamic? CIs apart?"""
    checks = []
    for data in DEMO_DATA:
        motion = last_stage(rows, "i3d-motion", data)
        for other in ("i3d-appearance", "c2d-motion", "c2d-appearance"):
            twin = last_stage(rows, other, data)
            if motion is None or twin is None:
                continue
            checks.append({"data": data, "layer": motion.layer, "i3d-motion": motion.dynamic, "other": other,
                           "other_layer": twin.layer, "other_dynamic": twin.dynamic, "i3d_ci": motion.dynamic_ci,
                           "other_ci": twin.dynamic_ci, "more_dynamic": motion.dynamic > twin.dynamic,
                           "cis_apart": bool(motion.dynamic_ci and twin.dynamic_ci
                                             and motion.dynamic_ci[0] > twin.dynamic_ci[1])})
    return checks


def verdicts(rows: list[DemoRow]) -> list[str]:
    """The checks the demo exists for, in words, from the last-stage rows."""
    return [f"{c['data']}: i3d-motion {c['layer']} dynamic {c['i3d-motion']:.1f}% {_ci(c['i3d_ci'])} is "
            f"{'more' if c['more_dynamic'] else 'NOT more'} dynamic than {c['other']} {c['other_layer']} "
            f"{c['other_dynamic']:.1f}% {_ci(c['other_ci'])}{' (CIs apart)' if c['cis_apart'] else ' (CIs overlap)'}"
            for c in last_stage_checks(rows)]


def run_demo(out: str | Path = "runs/demo", pairs: int = 64, models: list[str] | None = None,
             data: list[str] | None = None, flow_method: str = "dis", progress: bool = True,
             report: bool = True) -> list[DemoRow]:
    """Measure every bundled demo model on every demo data source; write results, summary.csv/.md and (``report``)
    report.html over all the run folders; return rows."""
    from stlens.runs import RunFolder

    run = RunFolder(out, "demo")
    run.resume()  # a demo folder is re-runnable; a folder holding another verb's run is refused
    try:
        rows = _run_demo(Path(out), pairs, models, data, flow_method, progress, report)
        run.mark(["summary.md", "summary.json", "report.html"], "complete",
                 info={"runs": sorted(str(p.parent.relative_to(out)) for p in Path(out).glob("*/*/result.json"))})
        return rows
    finally:
        run.release()


def _run_demo(out: Path, pairs: int, models: list[str] | None, data: list[str] | None, flow_method: str,
              progress: bool, report: bool) -> list[DemoRow]:
    from stlens.models.bundled import list_bundled

    started = time.perf_counter()
    bundled = set(list_bundled())
    rows: list[DemoRow] = []
    for name in models or list(DEMO_MODELS):
        if name not in bundled:
            print(f"stlens demo: bundled:{name} is missing (run make checkpoints); skipped", flush=True)
            continue
        for data_name in data or list(DEMO_DATA):
            if progress:
                print(f"stlens demo: {name} on {data_name} ...", flush=True)
            rows.extend(_measure_one(name, DEMO_MODELS[name], data_name, DEMO_DATA[data_name], pairs, out, progress,
                                     flow_method))
    table = demo_table(rows)
    checks = verdicts(rows)
    seconds = time.perf_counter() - started
    write_text(out / "summary.md", f"# stlens demo\n\n{table}\n\n" + "\n".join(f"- {c}" for c in checks)
               + f"\n\n{pairs} pairs per factor; {seconds:.0f} s\n")
    write_json(out / "summary.json", versioned({"rows": [r.as_dict() for r in rows], "checks": checks, "pairs": pairs,
                                                "data": DEMO_DATA, "seconds": round(seconds, 1)}))
    if rows and report:
        from stlens.report import build_report

        if progress:
            print("stlens demo: writing report.html ...", flush=True)
        build_report([out], out / "report.html", title="stlens demo: bundled models on synthetic and real pairs")
    return rows
