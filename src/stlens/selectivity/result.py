"""``SelectivityResult`` (what ``stlens.selectivity`` returns), its run folder (selectivity.csv, selectivity.json,
class_means.npz, selectivity.png, gallery/unit<k>.gif) and ``load_selectivity``. The formats: docs/formats.md §5."""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stlens.core.summary import ci_text, html_table, text_summary
from stlens.errors import StlensError
from stlens.files import json_safe, read_versioned, versioned
from stlens.runs import RunFolder, check_files, claimed, read_marker

FILES = ("selectivity.csv", "selectivity.json", "class_means.npz", "selectivity.png")
CSV_COLUMNS = ("layer", "channel", "selectivity", "selectivity_lo", "selectivity_hi", "top_class", "classes_served",
               "selectivity_kind")
JOINED_COLUMNS = ("unit_class", "r_dynamic", "r_static")
RERUN = "rerun stlens selectivity to write it again"
_SHORT = {"dynamic": "dyn", "static": "stat"}


@dataclass(repr=False)
class LayerSelectivity:
    """One layer: per channel the index with its bounds, top class, classes served and kind; the class means
    (classes, C); ``top`` (k, C) the clip numbers of each channel's highest responses; with a measure run joined,
    ``unit_class``, ``r_dynamic`` and ``r_static`` per channel; ``summary`` the layer's shares and means."""

    layer: str
    index: np.ndarray
    low: np.ndarray
    high: np.ndarray
    top_class: np.ndarray
    served: np.ndarray
    kinds: list[str]
    means: np.ndarray
    top: np.ndarray
    top_responses: np.ndarray
    summary: dict[str, Any] = field(default_factory=dict)
    unit_class: list[str] | None = None
    r_dynamic: np.ndarray | None = None
    r_static: np.ndarray | None = None

    @property
    def channels(self) -> int:
        return int(self.index.shape[0])

    def __repr__(self) -> str:
        s = self.summary
        return (f"LayerSelectivity({self.layer!r}: {self.channels} channels, mean SI {s['mean_selectivity']:.3f}, "
                f"class-specific {100 * s['shares']['class-specific']:.1f}%)")


@dataclass(repr=False)
class SelectivityResult:
    """What ``stlens.selectivity`` found; it prints as a table per layer.

    Args:
        model: the model's spec.
        data: the data's spec.
        classes: the class names, in index order.
        layers: per layer a ``LayerSelectivity`` (per channel: the class means, SI, its interval, top class, kind).
        clip_ids: the clips, in pass order.
        clip_labels: the clips' labels, in pass order.
        settings: the arguments of the run.
        timing: seconds spent per phase.
        gallery: per unit shown its layer, channel, GIF name, clips and (until saved; not when loaded) ``frames``.
        run_id: the id of the run folder it was saved into, or None.
        path: the run folder once saved, or None.

    Examples:
        >>> result = stlens.selectivity("stlens:c2d?classes=8&width=4", "synth:motion?n=8", "stage4", frames=4, size=16,
        ...                             bootstrap=0, gallery=0, progress=False)
        >>> isinstance(result, stlens.SelectivityResult), len(result.classes), len(result.clip_ids)
        (True, 8, 8)
    """

    model: str
    data: str
    classes: list[str]
    layers: list[LayerSelectivity]
    clip_ids: list[str]
    clip_labels: np.ndarray
    settings: dict[str, Any] = field(default_factory=dict)
    timing: dict[str, float] = field(default_factory=dict)
    gallery: list[dict[str, Any]] = field(default_factory=list)
    run_id: str | None = None
    path: Path | None = None

    def __getitem__(self, layer: str) -> LayerSelectivity:
        for item in self.layers:
            if item.layer == layer:
                return item
        raise KeyError(f"no layer '{layer}' in this result; layers: {', '.join(x.layer for x in self.layers)}")

    @property
    def joined(self) -> bool:
        return any(layer.unit_class is not None for layer in self.layers)

    def _rows(self) -> tuple[list[str], list[list[str]]]:
        head = ["layer", "C", "mean SI", "95% CI", "specific %", "generic %", "weak %"]
        if self.joined:
            head.append("SI by unit class")
        rows = []
        for layer in self.layers:
            s = layer.summary
            row = [layer.layer, str(layer.channels), f"{s['mean_selectivity']:.3f}",
                   ci_text(s.get("mean_selectivity_ci95"), 3),
                   *(f"{100 * s['shares'][k]:.1f}" for k in ("class-specific", "generic", "weak"))]
            if self.joined:
                row.append(" ".join(f"{_SHORT.get(k, k)} {v['mean_selectivity']:.2f}"
                                    for k, v in (s.get("by_unit_class") or {}).items()))
            rows.append(row)
        return head, rows

    def table(self) -> str:
        """A terminal table, one row per layer."""
        head, rows = self._rows()
        widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(head)]
        lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths,
                                                                                              strict=True)))
                 for cells in [head, *rows]]
        lines.insert(1, "-" * len(lines[0]))
        return "\n".join(line.rstrip() for line in lines)

    def _caption(self) -> str:
        return (f"class selectivity of {self.model} on {self.data}: {len(self.clip_ids)} clips, {len(self.classes)} "
                f"classes")

    def __repr__(self) -> str:
        return text_summary([self._caption()], self.table(), "result.layers[i].summary")

    def _repr_html_(self) -> str:
        head, rows = self._rows()
        return html_table(self._caption(), head, rows)

    # -- files ----------------------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """selectivity.json (format_version first; a missing number is null)."""
        layers = []
        for layer in self.layers:
            top = [[{"clip": int(layer.top[j, c]), "id": self.clip_ids[int(layer.top[j, c])],
                     "class": int(self.clip_labels[int(layer.top[j, c])]),
                     "response": float(layer.top_responses[j, c])} for j in range(layer.top.shape[0])]
                   for c in range(layer.channels)]
            layers.append({"layer": layer.layer, "channels": layer.channels, **layer.summary, "top_clips": top})
        return json_safe(versioned({"run_id": self.run_id, "model": self.model, "data": self.data,
                                  "clips": len(self.clip_ids), "classes": list(self.classes),
                                  "clip_ids": list(self.clip_ids),
                                  "clip_labels": [int(v) for v in self.clip_labels], "layers": layers,
                                  "gallery": [{k: v for k, v in e.items() if k != "frames"} for e in self.gallery],
                                  "settings": self.settings, "timing": self.timing}))

    def csv_text(self) -> str:
        """selectivity.csv: one row per (layer, channel)."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(CSV_COLUMNS + (JOINED_COLUMNS if self.joined else ()))
        for layer in self.layers:
            for c in range(layer.channels):
                row = [layer.layer, c, *(_number(v) for v in (layer.index[c], layer.low[c], layer.high[c])),
                       int(layer.top_class[c]), int(layer.served[c]), layer.kinds[c]]
                if self.joined:
                    row += ([layer.unit_class[c], _number(layer.r_dynamic[c]), _number(layer.r_static[c])]
                            if layer.unit_class is not None else ["", "nan", "nan"])
                writer.writerow(row)
        return buffer.getvalue()

    def save(self, folder: str | Path | RunFolder, *, overwrite: bool = False) -> Path:
        """Write the run folder ``folder`` (all files or none); a complete run there is refused unless
        ``overwrite``."""
        from stlens.files import atomic_write, write_json, write_text

        run = claimed(folder, "selectivity", overwrite=overwrite, outputs=FILES)
        with run:
            self.run_id = run.run_id
            self.gallery = self._gallery_files(run.staging)
            write_json(run.staging / "selectivity.json", self.to_dict())
            write_text(run.staging / "selectivity.csv", self.csv_text())
            means = {layer.layer: layer.means.astype(np.float32) for layer in self.layers}
            atomic_write(run.staging / "class_means.npz", lambda f: np.savez(f, **means))
            from stlens.selectivity.plots import depth_figure

            depth_figure(self).savefig(run.staging / "selectivity.png", dpi=110)
            self.path = run.commit()
        return self.path

    def _gallery_files(self, staging: Path) -> list[dict[str, Any]]:
        """Write the gallery's GIFs into ``staging``; an entry without frames (a loaded run) has its GIF copied from
        the run folder it came from, or is left out where that has none."""
        import shutil

        from stlens.visualize.outputs import write_gif

        kept = []
        for entry in self.gallery:
            target = staging / entry["gif"]
            target.parent.mkdir(parents=True, exist_ok=True)
            if entry.get("frames") is not None:
                write_gif(target, entry["frames"])
            elif self.path is not None and (self.path / entry["gif"]).is_file():
                shutil.copyfile(self.path / entry["gif"], target)
            else:
                continue
            kept.append(entry)
        return kept


def load_selectivity(path: str | Path) -> SelectivityResult:
    """A ``SelectivityResult`` from a run folder of ``stlens selectivity`` (its marker's checksums checked)."""
    run = Path(path)
    if not run.is_dir():
        raise StlensError(f"{run}: not a folder (expected a stlens selectivity run)")
    marker = read_marker(run)
    if marker is not None:
        if marker.get("verb") != "selectivity":
            raise StlensError(f"{run} holds a stlens {marker.get('verb')} run, not a selectivity run")
        check_files(run, marker, [n for n in FILES if n in marker.get("files", {})])
    for name in FILES[:3]:
        if not (run / name).is_file():
            raise StlensError(f"{run}: missing {name}; {RERUN}")
    doc = read_versioned(run / "selectivity.json", "stlens selectivity.json", RERUN)
    try:
        rows = list(csv.DictReader(io.StringIO((run / "selectivity.csv").read_text(encoding="utf-8"))))
        with np.load(run / "class_means.npz") as npz:
            means = {k: npz[k].astype(np.float64) for k in npz.files}
        layers = [_layer(entry, [r for r in rows if r["layer"] == entry["layer"]], means[entry["layer"]])
                  for entry in doc["layers"]]
        return SelectivityResult(model=str(doc["model"]), data=str(doc["data"]), classes=list(doc["classes"]),
                                 layers=layers, clip_ids=[str(v) for v in doc["clip_ids"]],
                                 clip_labels=np.asarray(doc["clip_labels"], dtype=np.int64),
                                 settings=dict(doc.get("settings") or {}), timing=dict(doc.get("timing") or {}),
                                 gallery=[dict(e) for e in doc.get("gallery") or []], run_id=doc.get("run_id"),
                                 path=run)
    except (KeyError, TypeError, ValueError, IndexError, OSError) as exc:
        raise StlensError(f"{run}: not a complete selectivity run, damaged or truncated ({type(exc).__name__}: "
                          f"{exc}); {RERUN}") from None


def _layer(entry: dict[str, Any], rows: list[dict[str, str]], means: np.ndarray) -> LayerSelectivity:
    rows = sorted(rows, key=lambda r: int(r["channel"]))
    if len(rows) != int(entry["channels"]):
        raise ValueError(f"layer {entry['layer']!r} has {len(rows)} rows for {entry['channels']} channels")
    top = entry["top_clips"]
    k = len(top[0]) if top else 0
    joined = bool(rows) and "unit_class" in rows[0]
    summary = {key: value for key, value in entry.items() if key not in ("layer", "channels", "top_clips")}
    return LayerSelectivity(
        layer=str(entry["layer"]), index=np.array([float(r["selectivity"]) for r in rows]),
        low=np.array([float(r["selectivity_lo"]) for r in rows]),
        high=np.array([float(r["selectivity_hi"]) for r in rows]),
        top_class=np.array([int(r["top_class"]) for r in rows]),
        served=np.array([int(r["classes_served"]) for r in rows]), kinds=[r["selectivity_kind"] for r in rows],
        means=means, top=np.array([[t[j]["clip"] for t in top] for j in range(k)], dtype=np.int64).reshape(k, -1),
        top_responses=np.array([[_nan(t[j]["response"]) for t in top] for j in range(k)]).reshape(k, -1),
        summary=summary, unit_class=[r["unit_class"] for r in rows] if joined else None,
        r_dynamic=np.array([float(r["r_dynamic"]) for r in rows]) if joined else None,
        r_static=np.array([float(r["r_static"]) for r in rows]) if joined else None)




def _nan(value: Any) -> float:
    return math.nan if value is None else float(value)


def _number(value: float) -> str:
    return "nan" if math.isnan(value) else repr(float(value))
