"""Choose the default strength α of the ``neural-fast`` stylizer on calibration clips (docs/stylizers.md).

``neural-fast`` outputs x + α·(net(x) − x), clamped (``stlens.video.fastneural.stylize_tensor``). This runs
``stlens pairs check`` on calibration clips (``--seed``; the judging comparison in the docs uses other clips) for
each α of ``--alphas`` and, with ``--neural``, the optimisation stylizer ``neural`` (minutes per clip), each run as
``--stylizer <it>,fourier`` (so that each gets the style seeds of the first place), and prints flow EPE, colour
change and 1 − SSIM per stylizer. The rule (stated before judging): the smallest α whose structure change
(1 − SSIM) reaches ``neural``'s on the calibration clips and whose colour change reaches ``fourier``'s; the largest
α of the grid when none does.

    PYTHONPATH=benchmarks python benchmarks/calibrate_stylizer.py [--weights W] [--alphas 1,1.5,2,2.5,3]
        [--clips 4] [--seed 1] [--neural | --reference REPORT.json] [--out calibration.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

#: the weights file the module stylizers below use (None: the bundled one); set by main
WEIGHTS: str | None = None


def _at(alpha: float):
    def stylize(clip: np.ndarray, seed: int) -> np.ndarray:
        from stlens.video.fastneural import neural_fast

        return neural_fast(clip, seed, weights=WEIGHTS, strength=alpha)

    return stylize


def alpha_name(alpha: float) -> str:
    """The module attribute of the stylizer at ``alpha`` (``a150`` for 1.5)."""
    return f"a{round(alpha * 100):03d}"


def choose(rows: dict[str, dict], alphas: list[float], reference: dict | None, fourier: dict) -> float:
    """The rule above: the smallest α whose 1 − SSIM reaches ``reference``'s (no reference: no structure target)
    and whose colour change reaches ``fourier``'s; else the largest α."""
    for alpha in alphas:
        row = rows[alpha_name(alpha)]["appearance_change"]
        structure_ok = reference is None or row["structure"] >= reference["appearance_change"]["structure"]
        if structure_ok and row["colour"] >= fourier["appearance_change"]["colour"]:
            return alpha
    return alphas[-1]


def main(argv: list[str] | None = None) -> int:
    global WEIGHTS
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default=None, help="a neural-fast.safetensors (default: the bundled one)")
    parser.add_argument("--alphas", default="1,1.5,2,2.5,3")
    parser.add_argument("--clips", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--neural", action="store_true", help="also the optimisation stylizer (slow)")
    parser.add_argument("--reference", type=Path, default=None, help="a pairs check report (json) of the same clips "
                        "whose `neural` row is the structure target (instead of --neural)")
    parser.add_argument("--data", default="sample:")
    parser.add_argument("--out", type=Path, default=None, help="write the rows and the choice as json")
    args = parser.parse_args(argv)
    WEIGHTS = args.weights
    alphas = sorted(float(a) for a in args.alphas.split(","))
    module = sys.modules[__name__]
    for alpha in alphas:
        setattr(module, alpha_name(alpha), _at(alpha))
    sys.modules.setdefault("calibrate_stylizer", module)
    from stlens.pairs.check import check_pairs

    # each run puts the stylizer first and fourier second, as the reference run (`--stylizer neural,fourier`) does:
    # a stylizer's style seeds depend on its place in the list, so every α (and neural) gets the same seeds
    firsts = [f"module:calibrate_stylizer:{alpha_name(a)}" for a in alphas] + (["neural"] if args.neural else [])
    rows: dict[str, dict] = {}
    for first in firsts:
        report = check_pairs(args.data, stylizer=f"{first},fourier", clips=args.clips, seed=args.seed, workers=0,
                             device="cpu", progress=False)
        rows[first.rsplit(":", 1)[-1]] = report["stylizers"][first]
        rows.setdefault("fourier", report["stylizers"]["fourier"])
    rows["fourier"] = rows.pop("fourier")  # (printed after the α rows)
    reference = rows.get("neural")
    if reference is None and args.reference is not None:
        known = json.loads(args.reference.read_text())
        if (known.get("clips"), known.get("seed")) not in ((args.clips, args.seed), (None, None)):
            raise SystemExit(f"{args.reference} checked other clips ({known.get('clips')} clips, seed "
                             f"{known.get('seed')})")
        reference = rows["neural"] = known["stylizers"]["neural"]
    chosen = choose(rows, alphas, reference, rows["fourier"])
    print("| stylizer | flow EPE px | colour Δ | 1 − SSIM | added flicker |")
    print("|---|---|---|---|---|")
    for name, row in rows.items():
        change = row["appearance_change"]
        print(f"| {name} | {row['flow_epe']:.3f} | {change['colour']:.1f} | {change['structure']:.3f} | "
              f"{row.get('temporal_flicker', float('nan')):.2f} |")
    print(f"chosen strength: {chosen}")
    if args.out is not None:
        args.out.write_text(json.dumps({"rows": rows, "alphas": alphas, "chosen": chosen, "seed": args.seed,
                                        "clips": args.clips}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
