"""The VIS study (docs/vis.md): the query-based instance segmenter trained on the motion-decided and the
appearance-decided instance worlds, several seeds each; every backbone stage, the pixel decoder and every decoder
layer measured; AP on held-out clips; the dominant factor's decoder channels masked against their control.

    python benchmarks/vis_study.py --out runs/vis-study            # the full study (resumable)
    python benchmarks/vis_study.py --quick --out /tmp/vis-quick    # end to end in minutes
    python benchmarks/vis_study.py --tables --out runs/vis-study   # the tables of what is done

Each (world, seed) is a folder of stlens run folders (train, measure, evaluate, ablate); a step whose run folder is
complete is skipped, so an interrupted study resumes where it stopped. The tables are mean ± sd over seeds
(summary.json, study.md).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

WORLDS = {"motion": "class = direction of motion", "appearance": "class = texture family"}
DOMINANT = {"motion": "dynamic", "appearance": "static"}
BACKBONE = ("stage1", "stage2", "stage3", "pixel_decoder")


@dataclass
class Settings:
    """What one study runs; ``quick`` is the end-to-end check."""

    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    width: int = 32  # the recipe chosen in benchmarks/vis_train.py (rgb-w32, docs/vis.md)
    queries: int = 10
    depth: int = 3
    steps: int = 800
    lr: float = 1e-3
    warmup: int = 40
    batch_size: int = 8
    train_clips: int = 2000
    test_clips: int = 256
    pairs: int = 512
    k: float = 50.0
    draws: int = 3
    bootstrap: int = 500

    @classmethod
    def quick(cls) -> Settings:
        return cls(seeds=[0], width=16, queries=6, depth=2, steps=60, lr=2e-3, warmup=5, batch_size=4, train_clips=128,
                   test_clips=32, pairs=32, draws=1, bootstrap=100)

    @property
    def model(self) -> str:
        return f"stlens:vis?width={self.width}&queries={self.queries}&depth={self.depth}&classes=4"

    def layers(self) -> list[str]:
        return [*BACKBONE, *(f"decoder.{i}" for i in range(self.depth))]

    def data(self, world: str, split: str) -> str:
        n = self.train_clips if split == "train" else self.test_clips
        return f"synth:{world}?task=instances&frames=8&n={n}&split={split}"


def complete(folder: Path, verb: str) -> bool:
    """Whether ``folder`` holds a complete ``verb`` run (its run marker says so)."""
    try:
        marker = json.loads((folder / ".stlens-run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(marker, dict) and marker.get("verb") == verb and marker.get("status") == "complete"


def weights(train: Path) -> str:
    from stlens.train import list_checkpoints

    found = list_checkpoints(train / "checkpoints")
    if not found:
        raise SystemExit(f"vis_study: {train} holds no checkpoint")
    return str(found[-1][1])


def run_one(s: Settings, out: Path, world: str, seed: int, log: dict[str, float]) -> None:
    """Train, measure, evaluate and ablate one (world, seed), skipping the steps already complete."""
    import stlens
    from stlens.train.trainer import TrainConfig

    root = out / "runs" / f"{world}-s{seed}"
    train, measure, evaluate, ablate = (root / name for name in ("train", "measure", "evaluate", "ablate"))
    steps = [
        ("train", train, lambda: stlens.train(TrainConfig(
            model=s.model, data=s.data(world, "train"), task="instances", steps=s.steps, lr=s.lr, warmup=s.warmup,
            batch_size=s.batch_size, seed=seed, eval_clips=min(64, s.test_clips), device="cpu", out=str(train)),
            progress=False)),
        ("measure", measure, lambda: stlens.measure(
            s.model, s.data(world, "train"), s.layers(), weights=weights(train), pairs=s.pairs, batch_size=8,
            seed=seed, device="cpu", out=measure, progress=False)),
        ("evaluate", evaluate, lambda: stlens.evaluate(
            s.model, s.data(world, "test"), weights=weights(train), bootstrap=s.bootstrap, seed=seed, device="cpu",
            out=evaluate, progress=False)),
        ("ablate", ablate, lambda: stlens.ablate(
            s.model, s.data(world, "test"), measure, [f"decoder.{s.depth - 1}"],
            [DOMINANT[world], f"random-least-{DOMINANT[world]}"], [s.k], draws=s.draws, bootstrap=s.bootstrap,
            weights=weights(train), seed=seed, device="cpu", out=ablate, progress=False)),
    ]
    for verb, folder, call in steps:
        if complete(folder, verb):
            continue
        began = time.perf_counter()
        print(f"vis_study: {world}-s{seed}: {verb} …", flush=True)
        call()
        log[f"{world}-s{seed}/{verb}"] = time.perf_counter() - began


def _mean_sd(values: list[float]) -> dict[str, Any]:
    values = [v for v in values if v is not None]
    if not values:
        return {"mean": None, "sd": None, "n": 0}
    return {"mean": statistics.fmean(values), "sd": statistics.pstdev(values) if len(values) > 1 else 0.0,
            "n": len(values), "values": values}


def collect(s: Settings, out: Path) -> dict[str, Any]:
    """Per world: per layer dynamic/static % and per-seed AP, and the two verdicts' numbers."""
    summary: dict[str, Any] = {}
    for world in WORLDS:
        per_layer: dict[str, dict[str, list[float]]] = {}
        ap: dict[str, list[float]] = {"ap": [], "ap50": [], "ap75": []}
        drops: dict[str, list[float]] = {"dominant": [], "control": []}
        gaps: list[float] = []
        for seed in s.seeds:
            root = out / "runs" / f"{world}-s{seed}"
            if complete(root / "measure", "measure"):
                doc = json.loads((root / "measure" / "result.json").read_text(encoding="utf-8"))
                percent = {layer["layer"]: layer["percent"] for layer in doc["layers"]}
                for name, p in percent.items():
                    entry = per_layer.setdefault(name, {"dynamic": [], "static": []})
                    entry["dynamic"].append(p["dynamic"])
                    entry["static"].append(p["static"])
                last = f"decoder.{s.depth - 1}"
                if last in percent and "stage3" in percent:
                    gaps.append(percent[last]["dynamic"] - percent["stage3"]["dynamic"])
            if complete(root / "evaluate", "evaluate"):
                doc = json.loads((root / "evaluate" / "evaluation.json").read_text(encoding="utf-8"))
                for name in ap:
                    ap[name].append(doc["metrics"][name])
            if complete(root / "ablate", "ablate"):
                doc = json.loads((root / "ablate" / "ablation.json").read_text(encoding="utf-8"))
                for row in doc["rows"]:
                    if row["select"] == DOMINANT[world]:
                        drops["dominant"].append(row["drop_ap"])
                    elif row["select"].startswith("random-least"):
                        drops["control"].append(row["drop_ap"])
        summary[world] = {
            "layers": {name: {f: _mean_sd(v) for f, v in entry.items()} for name, entry in per_layer.items()},
            "ap": {name: _mean_sd(v) for name, v in ap.items()},
            "queries_minus_backbone_dynamic": _mean_sd(gaps),
            "drop_ap": {name: _mean_sd(v) for name, v in drops.items()},
        }
    return summary


def _fmt(entry: dict[str, Any], digits: int = 1) -> str:
    if entry.get("mean") is None:
        return "–"
    return f"{entry['mean']:.{digits}f} ± {entry['sd']:.{digits}f}"


def markdown(s: Settings, summary: dict[str, Any], log: dict[str, float]) -> str:
    lines = [f"# VIS study ({s.model}, seeds {s.seeds}, {s.steps} steps)", ""]
    for world, entry in summary.items():
        lines += [f"## {world} world ({WORLDS[world]})", "", "| layer | dynamic % | static % |", "|---|---|---|"]
        lines += [f"| {name} | {_fmt(v['dynamic'])} | {_fmt(v['static'])} |" for name, v in entry["layers"].items()]
        lines += ["", "| AP | AP50 | AP75 |", "|---|---|---|",
                  "| " + " | ".join(_fmt(entry["ap"][n], 3) for n in ("ap", "ap50", "ap75")) + " |", "",
                  f"last decoder layer − stage3, dynamic %: {_fmt(entry['queries_minus_backbone_dynamic'])}",
                  f"AP drop masking {DOMINANT[world]} channels: {_fmt(entry['drop_ap']['dominant'], 3)}; "
                  f"control (random-least-{DOMINANT[world]}): {_fmt(entry['drop_ap']['control'], 3)}", ""]
    if log:
        lines += ["wall time this invocation: " + ", ".join(f"{k} {v:.0f} s" for k, v in log.items()), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="the study folder (resumed when it exists)")
    parser.add_argument("--quick", action="store_true", help="small settings: end to end in minutes")
    parser.add_argument("--tables", action="store_true", help="only write the tables of what is done")
    parser.add_argument("--seeds", default=None, help="comma-separated seeds (default 0,1,2; quick 0)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: run worlds side by side)")
    parser.add_argument("--worlds", default=",".join(WORLDS), help="comma-separated worlds to run (default both)")
    args = parser.parse_args(argv)
    s = Settings.quick() if args.quick else Settings()
    if args.seeds:
        s.seeds = [int(x) for x in args.seeds.split(",")]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    settings_file = out / "study.json"
    if settings_file.is_file():
        before = json.loads(settings_file.read_text(encoding="utf-8"))
        changed = [k for k, v in asdict(s).items() if k != "seeds" and before.get(k) != v]
        if changed:
            raise SystemExit(f"vis_study: {out} holds a study with other settings ({', '.join(changed)}); use "
                             f"another --out")
    settings_file.write_text(json.dumps(asdict(s), indent=1), encoding="utf-8")
    log: dict[str, float] = {}
    began = time.perf_counter()
    if not args.tables:
        import torch

        torch.set_num_threads(args.threads)
        for seed in s.seeds:
            for world in args.worlds.split(","):
                if world not in WORLDS:
                    raise SystemExit(f"vis_study: unknown world {world!r}; choose from {', '.join(WORLDS)}")
                run_one(s, out, world, seed, log)
    summary = collect(s, out)
    (out / "summary.json").write_text(json.dumps({"settings": asdict(s), "summary": summary, "seconds": log},
                                                 indent=1), encoding="utf-8")
    (out / "study.md").write_text(markdown(s, summary, log), encoding="utf-8")
    print(markdown(s, summary, log))
    print(f"vis_study: {time.perf_counter() - began:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
