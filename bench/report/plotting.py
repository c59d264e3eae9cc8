"""What the figures share: matplotlib without a window, records grouped by arch and method, one color and
line style per method, the legend, the figure that has nothing to show, and a figure's bytes."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402

from bench.files import write_atomic  # noqa: E402
from bench.record import Record, Run  # noqa: E402

Groups = dict[str, dict[str, list[Record]]]  # arch -> method -> records (grid order)
FORMATS = ("png", "pdf")


def groups(records: dict[Run, Record]) -> Groups:
    found: Groups = {}
    for (arch, method, _), record in records.items():
        found.setdefault(arch, {}).setdefault(method, []).append(record)
    return found


def methods(records: dict[Run, Record]) -> list[str]:
    """The method variants in grid order: one color each, the same in every figure of a dataset."""
    return list(dict.fromkeys(m for (_, m, _) in records))


def colors(names: list[str]) -> dict[str, tuple]:
    cmap = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    return {m: cmap(i % cmap.N) for i, m in enumerate(names)}


def line_styles(names: list[str]) -> dict[str, dict]:
    """Color, dash and marker per method, so lines that coincide (ssa and its ablations) stay visible."""
    by_name = colors(names)
    return {
        m: {
            "color": by_name[m],
            "linestyle": ("-", "--", "-.", ":")[i % 4],
            "marker": "os^vD<>p"[i % 8],
        }
        for i, m in enumerate(names)
    }


def legend(ax, **kwargs) -> None:
    """One legend entry per label, outside the panel on the right."""
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    if unique:
        ax.legend(
            unique.values(), unique.keys(), loc="upper left", bbox_to_anchor=(1.01, 1.0), **kwargs
        )


def figure_legend(fig, axes, title: str = "method") -> None:
    """The legend of every panel's labelled lines, once, right of the last panel of the first row."""
    handles = {label: h for ax in axes.flat for h, label in zip(*ax.get_legend_handles_labels())}
    axes[0][-1].legend(
        handles.values(), handles.keys(), loc="upper left", bbox_to_anchor=(1.01, 1.0), title=title
    )


def nothing_to_show(title: str, reason: str):
    """A figure of one line, `<title>: nothing to show: <reason>`, for a figure whose data the records lack."""
    fig, ax = plt.subplots(figsize=(8.0, 0.5))
    ax.axis("off")
    ax.text(
        0.5,
        0.5,
        f"{title}: nothing to show: {reason}",
        ha="center",
        va="center",
        fontsize=11,
        transform=ax.transAxes,
    )
    return fig


def is_empty(fig) -> bool:
    """Whether `fig` is a nothing_to_show figure."""
    return (
        len(fig.axes) == 1
        and not fig.axes[0].axison
        and any("nothing to show" in t.get_text() for t in fig.axes[0].texts)
    )


def figure_bytes(fig, fmt: str, **options) -> bytes:
    """The figure as `fmt` bytes, the same for the same figure: PDFs carry no creation date."""
    buffer = io.BytesIO()
    fig.savefig(
        buffer, format=fmt, metadata={"CreationDate": None} if fmt == "pdf" else None, **options
    )
    return buffer.getvalue()


def save(fig, stem: Path) -> list[Path]:
    """Write the figure as PNG and PDF (tight bounding box, nothing clipped), each atomically; close it."""
    paths = []
    for fmt in FORMATS:
        path = stem.with_name(f"{stem.name}.{fmt}")
        write_atomic(path, figure_bytes(fig, fmt, dpi=150, bbox_inches="tight"))
        paths.append(path)
    plt.close(fig)
    return paths
