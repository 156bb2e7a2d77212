"""Reports: a self-contained HTML page (``build_report``), PNG + SVG figures (``write_plots``, ``plots``), and
``load_result`` to read a saved run back into a ``MeasureResult``. matplotlib and Jinja2 load on first use."""

from stlens.report.load import find_inputs, load_result


def __getattr__(name: str):
    if name in ("build_report", "load_runs", "write_plots"):
        from stlens.report import html

        return getattr(html, name)
    raise AttributeError(f"module 'stlens.report' has no attribute {name!r}")


__all__ = ["build_report", "find_inputs", "load_result", "load_runs", "write_plots"]
