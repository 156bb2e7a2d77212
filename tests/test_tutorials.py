"""The tutorials of docs/tutorials (jupytext percent-format notebooks) run end to end and produce what they describe.

Each is executed as a script (``runpy``) in a temporary working directory, where it writes its ``runs/`` and
``figures/`` folders; matplotlib draws on Agg and ``plt.show`` only closes the figures. Measure-a-model runs in
``make test`` (27 s on the shared 2-core development machine); the other two took 1–3 minutes each there, depending
on the load, and are marked slow (``make test-all``)."""

from __future__ import annotations

import re
import runpy
import time
from pathlib import Path

import matplotlib
import pytest

TUTORIALS = Path(__file__).resolve().parents[1] / "docs" / "tutorials"
NOTEBOOKS = ["measure_a_model.py", "is_my_model_static_biased.py", "what_units_respond_to.py"]


def run_tutorial(name: str, tmp_path: Path, monkeypatch, capsys) -> tuple[dict, str]:
    """Run docs/tutorials/``name`` in ``tmp_path``; return its globals and what it printed."""
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(plt, "show", lambda *args, **kwargs: plt.close("all"))
    start = time.perf_counter()
    try:
        namespace = runpy.run_path(str(TUTORIALS / name), run_name="__main__")
    finally:
        plt.close("all")
    seconds = time.perf_counter() - start
    out = capsys.readouterr().out
    with capsys.disabled():
        print(f"\n{name}: {seconds:.1f} s")
    return namespace, out


def table_rows(text: str, header: str, rows: int) -> list[str]:
    """The first column of the ``rows`` lines under the printed table whose header line starts with ``header``
    (the line after the header is its rule of dashes)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    assert set(lines[start + 1]) == {"-"}
    return [line.split()[0] for line in lines[start + 2:start + 2 + rows]]


def pngs(folder: Path) -> set[str]:
    return {p.name for p in folder.glob("*.png") if p.stat().st_size > 1000}


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_tutorial_is_a_percent_format_notebook(name):
    """Each file is a jupytext percent notebook: the header, a markdown title cell first, markdown between code."""
    text = (TUTORIALS / name).read_text(encoding="utf-8")
    assert "format_name: percent" in text.split("# ---", 2)[1]
    cells = re.split(r"^# %%", text, flags=re.M)[1:]
    kinds = ["markdown" if cell.startswith(" [markdown]") else "code" for cell in cells]
    assert kinds[0] == "markdown" and cells[0].split("\n", 2)[1].startswith("# # ")
    assert kinds.count("markdown") >= 6 and kinds.count("code") >= 6
    jupytext = pytest.importorskip("jupytext")
    notebook = jupytext.reads(text, fmt="py:percent")
    assert [cell.cell_type for cell in notebook.cells] == kinds


def test_index_lists_every_tutorial():
    index = (TUTORIALS / "index.md").read_text(encoding="utf-8")
    assert sorted(re.findall(r"\]\(([\w.]+\.py)\)", index)) == sorted(NOTEBOOKS)
    assert sorted(p.name for p in TUTORIALS.glob("*.py")) == sorted(NOTEBOOKS)


def test_measure_a_model(tmp_path, monkeypatch, capsys):
    namespace, out = run_tutorial("measure_a_model.py", tmp_path, monkeypatch, capsys)
    result = namespace["result"]
    # real weights, and the notebook says which model ran
    assert result.meta["model"] == "stlens:effnet-c2d" and result.meta["random_init"] is False
    assert "model: stlens:effnet-c2d | random weights: False" in out
    assert result.meta["pairs"] == {"dynamic": 16, "static": 16}
    layers = ["stem", "stage2", "stage3", "stage5", "stage7", "head"]
    assert [layer.layer for layer in result.layers] == layers
    assert table_rows(out, "layer ", 6) == layers  # the printed per-layer table
    assert "same table: True" in out
    # per frame + a temporal mean: a frame-shuffled copy gives the same pooled responses (r_static = 1 or 0)
    r_static = result.units_frame()["r_static"]  # 0: a channel constant over the static pairs
    assert ((r_static > 1 - 1e-6) | (r_static.abs() < 1e-12)).all() and "| other: 0" in out
    run = tmp_path / "runs" / "effnet-c2d"
    assert {"result.json", "layers.csv", "units.csv", "config.json"} <= {p.name for p in run.iterdir()}
    assert pngs(tmp_path / "figures" / "measure_a_model") == {
        "dynamic_pair.png", "static_pair.png", "layers.png", "classes.png", "channels.png"}


@pytest.mark.slow
def test_is_my_model_static_biased(tmp_path, monkeypatch, capsys):
    namespace, out = run_tutorial("is_my_model_static_biased.py", tmp_path, monkeypatch, capsys)
    runs = tmp_path / "runs" / "static_bias"
    stages = ["stem", "stage1", "stage2", "stage3", "stage4"]
    for world in ("motion", "appearance"):
        assert [layer.layer for layer in namespace["measured"][world].layers] == stages
        result = namespace["behaviour"][world]
        assert [r["perturbation"] for r in result.rows if r["metric"] == "top1"] == [
            "clean", "freeze", "shuffle", "palette", "appearance-free"]
        assert result.representation is not None
        assert {"perturb.csv", "perturb.json", "perturb.png"} <= {p.name for p in (runs / f"perturb-{world}").iterdir()}
    assert table_rows(out, "perturbation ", 5) == ["clean", "freeze", "shuffle", "palette", "appearance-free"]
    # the known answer of the two worlds
    assert namespace["dataset"].verdict == "static-biased" and namespace["dataset"].reference_verdict == "dynamic"
    assert "verdict: static-biased | reference: dynamic" in out
    units = namespace["units"]
    assert units.joined and [layer.layer for layer in units.layers] == stages
    assert len(units.gallery) == 4
    assert all((runs / "selectivity-motion" / entry["gif"]).stat().st_size > 0 for entry in units.gallery)
    html = (runs / "report.html").read_text(encoding="utf-8")
    for section in ("Across models", "Behaviour against representation", "dataset report:",
                    "perturb: bundled:i3d-motion", "perturb: bundled:i3d-appearance", "selectivity: stlens:i3d"):
        assert section in html, section
    assert pngs(tmp_path / "figures" / "is_my_model_static_biased") == {
        "representation.png", "perturb_appearance.png", "gallery_unit0.png"}


@pytest.mark.slow
def test_what_units_respond_to(tmp_path, monkeypatch, capsys):
    namespace, out = run_tutorial("what_units_respond_to.py", tmp_path, monkeypatch, capsys)
    classes, units = namespace["classes"], namespace["units"]
    assert [t.name for t in classes.targets] == ["class_0", "class_2", "class_4", "class_6"]
    assert [t.measured["class"] for t in units.targets] == ["dynamic", "dynamic", "static", "static"]
    for target in [*classes.targets, *units.targets]:
        assert target.status == "ok" and target.rgb.shape == (16, 64, 64, 3) and len(target.history) == 48
    assert table_rows(out, "target    class dir", 4) == ["class_0", "class_2", "class_4", "class_6"]
    runs = tmp_path / "runs" / "units"
    for folder, targets in (("classes", classes), ("stage3", units)):
        assert (runs / folder / "mosaic.png").exists()
        for target in targets.targets:
            assert (runs / folder / target.name / "video.gif").stat().st_size > 0
    assert pngs(tmp_path / "figures" / "what_units_respond_to") == {"classes.png", "stage3_units.png", "history.png"}


def test_stlens_figures_leave_the_callers_matplotlib_backend_alone(tmp_path):
    """In Jupyter the inline backend must survive stlens: no figure of stlens switches the backend (matplotlib.use)
    or goes through pyplot, so the notebooks' own plt figures still display after perturb, dataset_report, report."""
    src = Path(__file__).resolve().parents[1] / "src" / "stlens"
    offenders = [str(p.relative_to(src)) for p in src.rglob("*.py")
                 if re.search(r"matplotlib\.use\(|^\s*import matplotlib\.pyplot", p.read_text(encoding="utf-8"), re.M)]
    assert offenders == []

    import stlens
    from stlens.perturb.result import PerturbResult
    from stlens.report.perturb import AXES, cross_run_figure

    rows = [{"perturbation": name, "kind": "motion", "metric": "top1", "score": 0.5, "score_lo": 0.4, "score_hi": 0.6,
             "retention": value, "retention_lo": value - 0.1, "retention_hi": value + 0.1, "chance": 0.125,
             "clips": 8} for name, value in (("clean", 1.0), ("freeze", 0.8), ("shuffle", 0.9))]
    run = PerturbResult(settings={"model": "stlens:a", "weights": None, "data": "synth:x"}, metrics=["top1"], rows=rows)
    reference = PerturbResult(settings={"model": "stlens:m", "weights": None, "data": "synth:motion"},
                              metrics=["top1"], rows=[{**r, "retention": 0.0, "retention_lo": -0.1,
                                                       "retention_hi": 0.1} for r in rows])
    point = {"dynamic": 20.0, "dynamic_lo": 15.0, "dynamic_hi": 25.0,
             **{f"{name}{end}": 0.5 for name, _ in AXES for end in ("", "_lo", "_hi")}}
    before = matplotlib.get_backend()
    matplotlib.use("svg")  # stands for Jupyter's inline backend: any backend but Agg
    try:
        figures = [run.plot(), stlens.perturb.dataset_report([run], reference=reference).plot(),
                   cross_run_figure([point, {**point, "dynamic": 30.0}])]
        run.save(tmp_path / "perturb")
        assert matplotlib.get_backend() == "svg"
        assert all(figure.axes for figure in figures) and (tmp_path / "perturb" / "perturb.png").stat().st_size > 0
    finally:
        matplotlib.use(before)
