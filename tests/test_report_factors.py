"""A report's further factors: per-layer rows and curves read from each layer's ``percent`` and ``ci95``."""

from __future__ import annotations

from types import SimpleNamespace

from stlens.report.factors import factor_curves, factor_names, factor_rows


def layer(name: str, speed: float) -> SimpleNamespace:
    percent = {"dynamic": 10.0, "static": 20.0, "speed": speed, "residual": 70.0 - speed}
    return SimpleNamespace(layer=name, channels=16, percent=percent,
                           ci95={"dynamic": [5.0, 15.0], "static": None, "speed": [speed - 1, speed + 1]})


def test_further_factors_give_rows_and_one_curve_each():
    result = SimpleNamespace(layers=[layer("a", 12.5), layer("b", 6.25)])
    assert factor_names(result) == ["dynamic", "static", "speed"]
    rows = factor_rows(result)
    assert [c["percent"] for c in rows[1]["cells"]] == ["10.0", "20.0", "6.2", "63.8"]
    assert rows[0]["cells"][2]["ci"] == "[11.5, 13.5]" and rows[0]["cells"][1]["ci"] == ""
    lines = factor_curves(result).axes[0].get_lines()
    assert [ln.get_label() for ln in lines] == ["dynamic", "static", "speed", "residual"]
    assert list(lines[2].get_ydata()) == [12.5, 6.25]


def test_a_default_run_has_no_factor_section():
    result = SimpleNamespace(layers=[SimpleNamespace(percent={"dynamic": 1.0, "static": 2.0, "residual": 97.0})])
    assert factor_names(result) == [] and factor_curves(result) is None
