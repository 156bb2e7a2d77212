"""Reports: a self-contained HTML page (``build_report``), PNG + SVG figures (``write_plots``, ``plots``), and
``load_result`` to read a saved run back into a ``MeasureResult``. matplotlib and Jinja2 load on first use.

This package is callable: ``stlens.report(runs, out, ...)`` is ``stlens.report.html.report``."""

from stlens._lazy import callable_package
from stlens.report.load import find_inputs, load_result


def __getattr__(name: str):
    if name in ("build_report", "load_runs", "report", "write_plots"):
        from stlens.report import html

        return getattr(html, name)
    raise AttributeError(f"module 'stlens.report' has no attribute {name!r}")


__all__ = ["build_report", "find_inputs", "load_result", "load_runs", "report", "write_plots"]
callable_package(__name__, "stlens.report.html:report")  # stlens.report(...) is the verb
