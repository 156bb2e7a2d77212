"""``ExplainResult`` (what ``stlens.explain`` returns), its run folder (explain.csv, explain.json, attributions.npz,
explain_clip<i>.gif) and ``load_explain``. The formats: docs/formats.md §5a."""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stlens.errors import StlensError
from stlens.files import json_safe, read_versioned, versioned
from stlens.runs import RunFolder, claimed

GIFS = 4  # overlay GIFs written for the first clips
FILES = ("explain.csv", "explain.json", "attributions.npz", *(f"explain_clip{i}.gif" for i in range(GIFS)))
RERUN = "rerun stlens explain to write it again"


@dataclass(repr=False)
class ExplainResult:
    """What ``stlens.explain`` computed, per clip in pass order.

    Args:
        model: the model's spec.
        data: the data's spec.
        method: the attribution method (``gradcam``, ``ig``, ``saliency``, ``grad_x_input``).
        clip_ids: the clips explained.
        labels: their labels (N,).
        predicted: the model's predictions (N,).
        targets: the classes explained (N,).
        scores: the logit of the target class (N,).
        probabilities: the probability of the target class (N,).
        maps: input name → (N, T, H, W) float32 maps summing to 1 (``rgb``, and ``flow`` for two-input models with an
            input method; Grad-CAM: ``rgb`` only).
        curves: the temporal curve (N, T) of the rgb map (its mass per frame).
        mask_shares: the map's mass inside the object mask (NaN where the data has no mask).
        spearman_shuffled: the Spearman correlation with the map of the frame-shuffled clip.
        spearman_restyled: the Spearman correlation with the map of the restyled clip.
        settings: the arguments of the run.
        timing: seconds spent per phase.
        frames: the first clips' uint8 frames, for the GIFs.
        cue_shares: the mass inside the cue box of a synth ``shortcut=`` world (None when the data has no cue).
        classes: the data's class names by label (None when the data does not name them).
        errors: with ``explain(errors=N)``, per clip its class visualizations (predicted, true); else None.
        run_id: the id of the run folder it was saved into, or None.
        path: the run folder once saved, or None.

    Examples:
        >>> result = stlens.explain("stlens:c2d?classes=8&width=4", "synth:motion?n=8", frames=4, size=16, clips=2,
        ...                         progress=False)
        >>> isinstance(result, stlens.ExplainResult), result.method, result.maps["rgb"].shape
        (True, 'gradcam', (2, 4, 16, 16))
    """

    model: str
    data: str
    method: str
    clip_ids: list[str]
    labels: np.ndarray
    predicted: np.ndarray
    targets: np.ndarray
    scores: np.ndarray
    probabilities: np.ndarray
    maps: dict[str, np.ndarray]
    curves: np.ndarray
    mask_shares: np.ndarray
    spearman_shuffled: np.ndarray
    spearman_restyled: np.ndarray
    settings: dict[str, Any] = field(default_factory=dict)
    timing: dict[str, float] = field(default_factory=dict)
    frames: list[np.ndarray] = field(default_factory=list)
    cue_shares: np.ndarray | None = None
    classes: list[str] | None = None
    errors: list[dict[str, Any]] | None = None  # explain(errors=N): per clip its class videos (predicted, true)
    run_id: str | None = None
    path: Path | None = None

    @property
    def summary(self) -> dict[str, Any]:
        """Means over the clips (NaN-aware; None where no clip has the number)."""
        def mean(values: np.ndarray) -> float | None:
            finite = values[np.isfinite(values)]
            return float(finite.mean()) if finite.size else None

        return {"clips": len(self.clip_ids), "accuracy": float(np.mean(self.labels == self.predicted))
                if len(self.labels) else None,
                "mean_mass_per_frame": [float(v) for v in self.curves.mean(0)] if len(self.curves) else [],
                "peak_frame": int(np.argmax(self.curves.mean(0))) if len(self.curves) else None,
                "mask_share": mean(self.mask_shares),
                **({} if self.cue_shares is None else {"cue_share": mean(self.cue_shares)}),
                "spearman_shuffled": mean(self.spearman_shuffled),
                "spearman_restyled": mean(self.spearman_restyled)}

    def __repr__(self) -> str:
        s = self.summary

        def text(v: float | None) -> str:
            return "n/a" if v is None else f"{v:.3f}"

        return (f"ExplainResult({self.method} of {self.model} on {self.data}: {s['clips']} clips, peak frame "
                f"{s['peak_frame']}, mask share {text(s['mask_share'])}, ρ shuffled {text(s['spearman_shuffled'])}, "
                f"ρ restyled {text(s['spearman_restyled'])})")

    # -- files ----------------------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """explain.json (format_version first; a missing number is null)."""
        return json_safe(versioned({"run_id": self.run_id, "model": self.model, "data": self.data,
                                  "method": self.method, "inputs": list(self.maps), "clip_ids": list(self.clip_ids),
                                  "classes": None if self.classes is None else list(self.classes),
                                  "summary": self.summary, "settings": self.settings, "timing": self.timing,
                                  **({} if self.errors is None else {"errors": [
                                      {k: v for k, v in e.items() if k != "videos"} for e in self.errors]})}))

    def class_name(self, k: int) -> str:
        """The data's name of class ``k``; empty when the data names no class ``k``."""
        return self.classes[k] if self.classes is not None and 0 <= k < len(self.classes) else ""

    def csv_text(self) -> str:
        """explain.csv: one row per clip (the class names last)."""
        frames = self.curves.shape[1]
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        cue = self.cue_shares is not None
        writer.writerow(["clip", "label", "predicted", "target", "score", "probability",
                         *(f"mass_frame_{t}" for t in range(frames)), "mask_share", *(["cue_share"] if cue else []),
                         "spearman_shuffled", "spearman_restyled", "label_name", "predicted_name", "target_name"])
        for i, clip in enumerate(self.clip_ids):
            writer.writerow([clip, int(self.labels[i]), int(self.predicted[i]), int(self.targets[i]),
                             *(_number(v) for v in (self.scores[i], self.probabilities[i], *self.curves[i],
                                                    self.mask_shares[i], *([self.cue_shares[i]] if cue else []),
                                                    self.spearman_shuffled[i], self.spearman_restyled[i])),
                             *(self.class_name(int(k[i])) for k in (self.labels, self.predicted, self.targets))])
        return buffer.getvalue()

    def arrays(self) -> dict[str, np.ndarray]:
        """attributions.npz: ``clip<i>`` (one input) or ``clip<i>_rgb``/``clip<i>_flow`` (two inputs)."""
        one = len(self.maps) == 1
        return {f"clip{i}" if one else f"clip{i}_{name}": maps[i].astype(np.float32)
                for name, maps in self.maps.items() for i in range(len(self.clip_ids))}

    def save(self, folder: str | Path | RunFolder, *, overwrite: bool = False) -> Path:
        """Write the run folder ``folder`` (all files or none); a complete run there is refused unless
        ``overwrite``."""
        from stlens.explain.errors import error_frames
        from stlens.explain.measures import overlay
        from stlens.files import atomic_write, write_json, write_text
        from stlens.pairs.quality import write_gif

        run = claimed(folder, "explain", overwrite=overwrite, outputs=FILES)
        with run:
            self.run_id = run.run_id
            write_json(run.staging / "explain.json", self.to_dict())
            write_text(run.staging / "explain.csv", self.csv_text())
            arrays = self.arrays()
            atomic_write(run.staging / "attributions.npz", lambda f: np.savez_compressed(f, **arrays))
            for i, frames in enumerate(self.frames[:GIFS]):
                write_gif(run.staging / f"explain_clip{i}.gif", overlay(frames, self.maps["rgb"][i]))
            for k, entry in enumerate(self.errors or []):
                (run.staging / "errors").mkdir(exist_ok=True)
                write_gif(run.staging / entry["gif"], error_frames(overlay(self.frames[k], self.maps["rgb"][k]),
                                                                   *entry["videos"]))
            self.path = run.commit()
        return self.path


def load_explain(path: str | Path) -> dict[str, Any]:
    """The explain.json of a run folder, its rows (explain.csv) and maps (attributions.npz) as a dict."""
    run = Path(path)
    if not (run / "explain.json").is_file():
        raise StlensError(f"{run}: missing explain.json; {RERUN}")
    doc = read_versioned(run / "explain.json", "stlens explain.json", RERUN)
    doc["rows"] = list(csv.DictReader(io.StringIO((run / "explain.csv").read_text(encoding="utf-8"))))
    with np.load(run / "attributions.npz") as npz:
        doc["maps"] = {k: npz[k] for k in npz.files}
    return doc


def _number(value: float) -> str:
    return "nan" if not math.isfinite(float(value)) else f"{float(value):.6g}"


