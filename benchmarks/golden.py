"""Golden snapshot of measurements, to show that a refactor moves no figure.

    python benchmarks/golden.py --write before.json     # on the old code
    python benchmarks/golden.py --check before.json     # on the new code, same machine: exit 1 on any difference

Each case measures a small model on small pairs through the Python API (the same calls on old and new code) and keeps
result.json's fields (without ``timing``, ``run_id``, the versions and fields added since) and every units.csv
value exactly. Floating-point results depend on the CPU, so compare snapshots taken on one machine.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

import stlens

#: name → (model spec, weights, data, pairs per factor, options for make_pairs, batch size)
CASES = {
    "r3d_18-sample": ("torchvision:r3d_18", None, "sample:", 8, {}, 4, {"frames": 4, "size": 32}),
    "i3d-motion-synth": ("stlens:i3d", "bundled:i3d-motion", "synth:motion?split=test&n=64&seed=0", 16, {}, 8, {}),
    "twostream-synth": ("stlens:twostream", "bundled:twostream-motion", "synth:motion?split=test&n=64&seed=0", 16,
                        {"flow": "dis"}, 8, {}),
    "twostream-sample-dis": ("stlens:twostream", "bundled:twostream-motion", "sample:", 8, {"flow": "dis"}, 8, {}),
    "c2d-appearance-fourier": ("stlens:c2d", "bundled:c2d-appearance", "sample:", 8, {"stylizer": "fourier"}, 8, {}),
    "slowfast-random-synth": ("stlens:slowfast", None, "synth:appearance?n=32&seed=1", 8, {}, 4, {}),
}
#: fields left out of the comparison: run-specific ones, and the versions (of stlens and of the file format), which
#: change without any figure moving
DROPPED = ("timing", "run_id", "random_init", "stlens_version", "format_version")


def snapshot() -> dict:
    shots = {}
    for name, (spec, weights, data, pairs, options, batch, sizes) in CASES.items():
        torch.manual_seed(0)
        handle = stlens.load_model(spec, weights, **sizes)
        made = stlens.make_pairs(stlens.open_data(data), handle.input, pairs, seed=0, **options)
        result = stlens.measure(handle, made, "default", batch_size=batch, bootstrap=50, seed=0, progress=False)
        doc = {k: v for k, v in result.to_dict().items() if k not in DROPPED}
        units = [[r.layer, c, float(r.r_dynamic[c]), float(r.r_static[c]), r.classes[c]]
                 for r in result.layers for c in range(r.channels)]
        shots[name] = {"result": doc, "units": units}
        print(f"{name}: {len(result.layers)} layers, {len(units)} channels", flush=True)
    return shots


def compare(old: dict, new: dict) -> list[str]:
    problems = []
    for name in old:
        if name not in new:
            problems.append(f"{name}: missing")
            continue
        a, b = old[name], new[name]
        for key in a["result"]:
            if key not in DROPPED and a["result"][key] != b["result"].get(key):
                problems.append(f"{name}: result.json field {key!r} differs")
        if a["units"] != b["units"]:
            changed = sum(x != y for x, y in zip(a["units"], b["units"], strict=False))
            problems.append(f"{name}: {changed} of {len(a['units'])} units.csv rows differ")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--write", help="write the snapshot to this JSON file")
    group.add_argument("--check", help="compare with this snapshot")
    args = parser.parse_args()
    shots = snapshot()
    if args.write:
        with open(args.write, "w", encoding="utf-8") as handle:
            json.dump(shots, handle)
        print(f"→ {args.write}")
        return 0
    with open(args.check, encoding="utf-8") as handle:
        problems = compare(json.load(handle), shots)
    print("\n".join(problems) if problems else f"identical: {len(shots)} cases, every result.json field and unit")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
