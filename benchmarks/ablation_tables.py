"""Markdown tables of the ablate runs of benchmarks/ablation_bundled.sh (for docs/ablation.md and docs/ablate.md).

Per model, mode and layer: one row per selection, one column per K — top-1 after masking (random selections: the
mean over draws ± their sd), the unmasked baseline in the heading; then the measured unit classes of each layer.

Usage: .venv/bin/python benchmarks/ablation_tables.py [runs/ablation]
"""

from __future__ import annotations

import csv
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np


def rows_of(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def table(rows: list[dict], mode: str, layer: str) -> str:
    here = [r for r in rows if r["mode"] == mode and r["layer"] == layer]
    base = next(float(r["top1"]) for r in here if r["select"] == "none")
    ks = sorted({float(r["k"]) for r in here if r["select"] != "none"})
    cells: dict[tuple[str, float], list[float]] = defaultdict(list)
    ci: dict[tuple[str, float], tuple[float, float]] = {}
    for r in here:
        if r["select"] != "none":
            cells[(r["select"], float(r["k"]))].append(float(r["top1"]))
            ci[(r["select"], float(r["k"]))] = (float(r["drop_top1_low"]), float(r["drop_top1_high"]))
    selects = list(dict.fromkeys(r["select"] for r in here if r["select"] != "none"))
    head = f"| {layer} · {mode} (unmasked {base:.3f}) | " + " | ".join(f"K={k:g}%" for k in ks) + " |"
    lines = [head, "|---|" + "---:|" * len(ks)]
    for select in selects:
        out = []
        for k in ks:
            values = cells[(select, k)]
            if len(values) > 1:
                out.append(f"{np.mean(values):.3f} ± {np.std(values):.3f}")
            else:
                out.append(f"{values[0]:.3f}")
        lines.append(f"| {select} | " + " | ".join(out) + " |")
    return "\n".join(lines)


def classes(measure: Path) -> str:
    doc = json.loads((measure / "result.json").read_text())
    lines = ["| layer | C | dynamic % | static % | units dynamic / static / joint / none / dead |",
             "|---|---:|---:|---:|---|"]
    for layer in doc["layers"]:
        units = layer["units"]
        lines.append(f"| {layer['layer']} | {layer['channels']} | {layer['percent']['dynamic']:.1f} | "
                     f"{layer['percent']['static']:.1f} | " + " / ".join(str(units[k]) for k in
                                                                       ("dynamic", "static", "joint", "none", "dead"))
                     + " |")
    return "\n".join(lines)


def main(root: str = "runs/ablation") -> int:
    base = Path(root)
    for name in ("motion", "appearance"):
        folder = base / f"{name}-ablate"
        if not (folder / "ablation.csv").is_file():
            print(f"## i3d-{name}: no run in {folder}\n")
            continue
        doc = json.loads((folder / "ablation.json").read_text())
        s = doc["settings"]
        print(f"## i3d-{name} on {s['data']} ({s['clips']} clips; units from {s['units']}; "
              f"{doc['timing']['seconds'] / 60:.1f} min, {doc['timing']['forwards']} forwards)\n")
        print(classes(base / f"{name}-measure") + "\n")
        rows = rows_of(folder / "ablation.csv")
        for mode in s["modes"]:
            for layer in s["layers"]:
                print(table(rows, mode, layer) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
