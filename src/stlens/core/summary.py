"""How result objects print: a few header lines and a table, clipped to what a person reads (``repr``), and the same
table as HTML for Jupyter (``_repr_html_``, every value escaped). Standard library only."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from html import escape
from typing import Any

#: the most table rows a ``repr`` shows; the rest is counted on one line
MAX_ROWS = 30


def clip_lines(lines: Sequence[str], limit: int = MAX_ROWS, hint: str = "") -> list[str]:
    """``lines`` up to ``limit``, then one line counting the rest (with ``hint``: how to see them all)."""
    if len(lines) <= limit:
        return list(lines)
    more = f"… {len(lines) - limit} more rows"
    return [*lines[:limit], f"{more} ({hint})" if hint else more]


def text_summary(header: Iterable[str], table: str, hint: str = "") -> str:
    """The ``repr`` of a result: its header lines, then ``table`` whose rows past the first two (head and rule) are
    clipped to ``MAX_ROWS``."""
    rows = table.splitlines()
    return "\n".join([*header, *rows[:2], *clip_lines(rows[2:], MAX_ROWS, hint)])


def html_table(caption: str, head: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """An HTML table with ``caption``, every cell and header escaped."""
    cells = "".join(f"<th>{escape(str(h))}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{escape(str(v))}</td>" for v in row) + "</tr>" for row in rows)
    return (f"<table><caption>{escape(caption)}</caption><thead><tr>{cells}</tr></thead>"
            f"<tbody>{body}</tbody></table>")


def ci_text(ci: Sequence[float] | None, digits: int = 1) -> str:
    """``[low, high]`` with ``digits`` decimals, or – when there is no interval (or it is NaN)."""
    if not ci or ci[0] is None or ci[0] != ci[0]:
        return "–"
    return f"[{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"
