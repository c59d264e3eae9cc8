"""The one markdown table writer of the reports (the dataset table, claims.md, the sweep table and
findings.md), and the cell formats they share."""

from __future__ import annotations

import math

EMPTY = "—"  # a cell without a value


def table(header: list[str], rows: list[list]) -> list[str]:
    """A GitHub markdown table as lines: the header, its rule, one line per row (cells as str())."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]


def missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def number(value: float | None, fmt: str = "{:.2f}") -> str:
    """`value` formatted with `fmt`, or an empty cell for None and NaN."""
    return EMPTY if missing(value) else fmt.format(value)


def mean_std(mean: float, std: float) -> str:
    """'mean ± std' with two decimals (std left out where undefined), or an empty cell without a mean."""
    if missing(mean):
        return EMPTY
    return f"{mean:.2f}" + ("" if missing(std) else f" ± {std:.2f}")
