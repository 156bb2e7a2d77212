"""MeasureResult: per-layer and per-channel results, the result.json / layers.csv / units.csv / latents.npz writers."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stlens.files import atomic_write, write_json, write_text
from stlens.measure.estimate import CLASSES, layer_statistics, percent, percentile_interval
from stlens.measure.moments import PairedMoments
from stlens.runs import RunFolder

FIELDS = ("dynamic", "static")
UNIT_COLUMNS = ["layer", "channel", "r_dynamic", "r_static", "class"]


@dataclass
class LayerResult:
    """The estimate for one latent (a layer, or one element of a list/dict output)."""

    layer: str
    channels: int
    score: dict[str, float]
    dims: dict[str, int]
    percent: dict[str, float]
    ci95: dict[str, list[float] | None]
    units: dict[str, int]
    units_ci95: dict[str, list[float] | None]
    bias: float
    bias_ci95: list[float] | None
    r_dynamic: np.ndarray
    r_static: np.ndarray
    classes: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "layer": self.layer, "channels": self.channels, "score": self.score, "dims": self.dims,
            "percent": self.percent, "ci95": self.ci95, "units": self.units, "units_ci95": self.units_ci95,
            "bias": self.bias, "bias_ci95": self.bias_ci95,
        }


def _interval(values: np.ndarray) -> list[float] | None:
    found = percentile_interval(values)
    return None if found is None else [round(found[0], 4), round(found[1], 4)]


def _dims_interval(dims: np.ndarray, channels: int) -> list[float] | None:
    """The CI of a percentage, from the bootstrap dims, rounded exactly like the point percentage."""
    found = percentile_interval(dims, discrete=True)
    return None if found is None else [percent(int(found[0]), channels), percent(int(found[1]), channels)]


def _count_interval(counts: np.ndarray) -> list[float] | None:
    found = percentile_interval(counts, discrete=True)
    return None if found is None else [found[0], found[1]]


def estimate_layer(name: str, moments: PairedMoments, threshold: float) -> LayerResult:
    """Point estimate and bootstrap intervals for one latent from its streamed moments."""
    point = layer_statistics(moments.factor_sums(0), moments.factor_sums(1), threshold)
    c = point.channels
    dims = {"dynamic": int(point.dims[0]), "static": int(point.dims[1]), "residual": int(point.dims[2])}
    counts = point.class_counts()
    ci95: dict[str, list[float] | None] = {"dynamic": None, "static": None}
    units_ci95: dict[str, list[float] | None] = {k: None for k in CLASSES}
    bias_ci = None
    if moments.bootstrap:
        boot = layer_statistics(moments.replicate_sums(0), moments.replicate_sums(1), threshold)
        valid = boot.valid
        for i, key in enumerate(FIELDS):
            ci95[key] = _dims_interval(boot.dims[valid, i], c)
        boot_counts = boot.class_counts()[valid]
        for i, key in enumerate(CLASSES):
            units_ci95[key] = _count_interval(boot_counts[:, i])
        bias_ci = _interval(boot.bias[valid])
    return LayerResult(
        layer=name,
        channels=c,
        score={"dynamic": float(point.score_dynamic), "static": float(point.score_static)},
        dims=dims,
        percent={k: percent(v, c) for k, v in dims.items()},
        ci95=ci95,
        units={k: int(counts[i]) for i, k in enumerate(CLASSES)},
        units_ci95=units_ci95,
        bias=float(point.bias),
        bias_ci95=bias_ci,
        r_dynamic=point.r_dynamic,
        r_static=point.r_static,
        classes=[CLASSES[code] for code in point.classes],
    )


@dataclass
class MeasureResult:
    """What ``stlens.measure`` returns: run metadata, one ``LayerResult`` per latent, and optionally the latents."""

    meta: dict[str, Any]
    layers: list[LayerResult]
    timing: dict[str, float] = field(default_factory=dict)
    moments: dict[str, PairedMoments] = field(default_factory=dict, repr=False)
    latents: dict[str, np.ndarray] | None = field(default=None, repr=False)
    #: the id of the run folder this result was saved to or loaded from (docs/reliability.md)
    run_id: str | None = None

    def __getitem__(self, layer: str) -> LayerResult:
        for item in self.layers:
            if item.layer == layer:
                return item
        raise KeyError(f"no layer '{layer}' in this result; layers: {', '.join(x.layer for x in self.layers)}")

    def to_dict(self) -> dict[str, Any]:
        """The result.json document (DESIGN.md section 3)."""
        doc = {**self.meta, "layers": [layer.to_dict() for layer in self.layers], "timing": self.timing}
        return doc if self.run_id is None else doc | {"run_id": self.run_id}

    def to_frame(self):
        """A pandas DataFrame with one row per layer and the result.json fields flattened."""
        import pandas as pd

        return pd.DataFrame([flatten_layer(layer) for layer in self.layers])

    def units_frame(self):
        """A pandas DataFrame with one row per channel: layer, channel, r_dynamic, r_static, class."""
        import pandas as pd

        return pd.DataFrame(list(unit_rows(self.layers)), columns=UNIT_COLUMNS)

    def save(self, out: str | Path | RunFolder, config: dict[str, Any] | None = None, *,
             overwrite: bool = False) -> Path:
        """Write result.json, layers.csv, units.csv, config.json and (when kept) latents.npz into the run folder
        ``out`` (docs/reliability.md): all files or none; a folder holding a complete run is refused unless
        ``overwrite``; ``out`` may be a ``RunFolder`` claimed before the work started."""
        folder = out if isinstance(out, RunFolder) else RunFolder(out, "measure", overwrite=overwrite)
        with folder:
            self.write_files(folder.staging, config, folder.run_id)
            saved = folder.commit("interrupted" if self.meta.get("interrupted") else "complete")
        self.run_id = folder.run_id
        return saved

    def write_files(self, out: Path, config: dict[str, Any] | None, run_id: str | None = None) -> None:
        """The files of a measure run, written into ``out`` (a staging folder); ``run_id`` goes into the JSONs."""
        if self.latents is not None:
            atomic_write(out / "latents.npz", lambda f: np.savez(f, **self.latents))
        write_text(out / "units.csv", _csv(UNIT_COLUMNS, unit_rows(self.layers)))
        rows = [flatten_layer(layer) for layer in self.layers]
        write_text(out / "layers.csv", _csv(list(rows[0]) if rows else [], (r.values() for r in rows)))
        config = dict(config) if config is not None else {"meta": self.meta}
        doc = self.to_dict()
        if run_id is not None:
            config["run_id"] = doc["run_id"] = run_id
        write_json(out / "config.json", config)
        write_json(out / "result.json", doc)

    def _repr_html_(self) -> str:
        """An HTML table for Jupyter: one row per layer (every value escaped)."""
        from html import escape

        def ci(v: list[float] | None) -> str:
            return f"[{v[0]:.1f}, {v[1]:.1f}]" if v else "–"

        head = ["layer", "C", "dynamic %", "95% CI", "static %", "95% CI", "residual %", "units D/S/J/N/dead", "bias"]
        rows = [[r.layer, r.channels, f"{r.percent['dynamic']:.1f}", ci(r.ci95.get("dynamic")),
                 f"{r.percent['static']:.1f}", ci(r.ci95.get("static")), f"{r.percent['residual']:.1f}",
                 "/".join(str(r.units.get(k, 0)) for k in CLASSES), f"{r.bias:.2f}"] for r in self.layers]
        pairs = self.meta.get("pairs") or {}
        caption = (f"{self.meta.get('model')} on {self.meta.get('data')}: {pairs.get('dynamic')}+{pairs.get('static')}"
                   f" pairs, τ = {self.meta.get('threshold')}")
        cells = "".join(f"<th>{escape(h)}</th>" for h in head)
        body = "".join("<tr>" + "".join(f"<td>{escape(str(v))}</td>" for v in row) + "</tr>" for row in rows)
        return (f"<table><caption>{escape(caption)}</caption><thead><tr>{cells}</tr></thead>"
                f"<tbody>{body}</tbody></table>")

    def plot(self, kind: str = "layers"):
        """A matplotlib Figure: ``layers`` (dynamic / static / residual % with 95% CIs), ``classes`` (channel classes
        per layer) or ``channels`` (r_static vs r_dynamic per channel with the τ lines)."""
        from stlens.report import plots

        makers = {"layers": plots.layer_bars, "classes": plots.unit_classes, "channels": plots.channel_scatter}
        if kind not in makers:
            from stlens.errors import StlensError

            raise StlensError(f"unknown plot kind '{kind}'; choose one of {', '.join(makers)}")
        return makers[kind](self)

    def table(self) -> str:
        """A per-layer table for the terminal."""
        head = (f"{'layer':<18}{'C':>6}{'dynamic %':>11}{'95% CI':>15}{'static %':>10}{'95% CI':>15}"
                f"{'resid %':>9}  {'units D/S/J/N/dead':<20}{'bias':>7}")
        lines = [head, "-" * len(head)]
        for r in self.layers:
            def ci(key: str, r: LayerResult = r) -> str:
                v = r.ci95.get(key)
                return f"[{v[0]:.1f}, {v[1]:.1f}]" if v else "-"

            units = "/".join(str(r.units[k]) for k in CLASSES)
            lines.append(f"{r.layer:<18}{r.channels:>6}{r.percent['dynamic']:>11.1f}{ci('dynamic'):>15}"
                         f"{r.percent['static']:>10.1f}{ci('static'):>15}{r.percent['residual']:>9.1f}  "
                         f"{units:<20}{r.bias:>7.2f}")
        return "\n".join(lines)


def flatten_layer(layer: LayerResult) -> dict[str, Any]:
    """One layers.csv row: result.json fields flattened with underscores."""
    row: dict[str, Any] = {"layer": layer.layer, "channels": layer.channels}
    for group in ("score", "dims", "percent", "units"):
        for key, value in getattr(layer, group).items():
            row[f"{group}_{key}"] = value
    for key in FIELDS:
        interval = layer.ci95.get(key) or [None, None]
        row[f"ci95_{key}_low"], row[f"ci95_{key}_high"] = interval
    row["bias"] = layer.bias
    interval = layer.bias_ci95 or [None, None]
    row["bias_ci95_low"], row["bias_ci95_high"] = interval
    return row


def unit_rows(layers: list[LayerResult]):
    for layer in layers:
        for c in range(layer.channels):
            yield (layer.layer, c, float(layer.r_dynamic[c]), float(layer.r_static[c]), layer.classes[c])


def _csv(header: list[str], rows) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(["" if v is None else v for v in row] for row in rows)
    return buffer.getvalue()
