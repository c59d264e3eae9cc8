"""What `perf step` shows of its rows: the fixed-column table, the saved-activations-by-arch figure and the
ratio figure (a step's memory beyond the weights, and its time, against BP's on the same arch)."""

from __future__ import annotations

from pathlib import Path

from bench.perf.common import table


def with_memory_ratio(rows: list[dict]) -> list[dict]:
    """The rows, each with `memory_ratio`: (saved activations + auxiliary bytes) over BP's on the same arch
    (the memory a step holds beyond the network's weights; BP's row, measured first on every arch, is 1.0)."""
    bp = {}
    for row in rows:
        bp.setdefault(row["arch"], row["saved_mb"] + row["auxiliary_mb"])
    return [
        {**row, "memory_ratio": (row["saved_mb"] + row["auxiliary_mb"]) / bp[row["arch"]]}
        for row in rows
    ]


def report(rows: list[dict]) -> list[str]:
    """Fixed-column lines of the table."""
    return table(
        (
            ("arch", -10, lambda r: r["arch"]),
            ("method", -16, lambda r: r["method"]),
            ("median ms", 10, lambda r: f"{r['median_ms']:.1f}"),
            ("vs bp", 6, lambda r: f"{r['ratio_to_bp']:.2f}x"),
            ("GFLOP", 8, lambda r: f"{r['gflop_per_step']:.2f}"),
            ("of peak", 8, lambda r: f"{100 * r['peak_share']:.1f}%"),
            ("saved MB", 9, lambda r: f"{r['saved_mb']:.1f}"),
            ("aux MB", 7, lambda r: f"{r['auxiliary_mb']:.1f}"),
            ("mem vs bp", 9, lambda r: f"{r['memory_ratio']:.2f}x"),
        ),
        rows,
    )


def plot_saved(rows: list[dict], archs: list[str], path: Path) -> None:
    """Saved activations per step (the kept block inputs of a blockwise step included) of every method
    row on each arch, archs in the order given (deepest last, when given so), one line per row; PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = {r["arch"]: r["saved_mb"] for r in rows if r["method"] == method}
        ax.plot(
            archs,
            [mine.get(a, float("nan")) for a in archs],
            marker="o",
            linestyle="--" if "blockwise" in method else "-",
            label=method,
        )
    ax.set_ylabel("saved activations per step (MB)")
    batch = rows[0]["batch_size"] if rows else "?"
    ax.set_title(f"training memory per step, batch {batch} ({rows[0]['device'] if rows else ''})")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_ratios(rows: list[dict], archs: list[str], path: Path) -> None:
    """Two panels, one bar per (method row, arch): left, the memory a step holds beyond the weights as a
    ratio to BP's, saved activations solid and auxiliary modules' bytes hatched on top; right, the step
    time as a ratio to BP's; a line at 1.0 (BP) on both. PNG or PDF by the suffix of `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(dict.fromkeys(r["method"] for r in rows))
    cell = {(r["method"], r["arch"]): r for r in rows}
    bp = {r["arch"]: r["saved_mb"] + r["auxiliary_mb"] for r in rows if r["memory_ratio"] == 1.0}
    width = 0.8 / max(1, len(archs))
    fig, (mem, time) = plt.subplots(1, 2, figsize=(max(8, 0.9 * len(methods) * 2), 4.2))
    for k, arch in enumerate(archs):
        xs = [i + (k - (len(archs) - 1) / 2) * width for i in range(len(methods))]
        mine = [cell.get((m, arch)) for m in methods]
        saved = [r["saved_mb"] / bp[arch] if r else float("nan") for r in mine]
        aux = [r["auxiliary_mb"] / bp[arch] if r else float("nan") for r in mine]
        bars = mem.bar(xs, saved, width, label=f"{arch}: saved activations")
        mem.bar(
            xs,
            aux,
            width,
            bottom=saved,
            color=bars.patches[0].get_facecolor(),
            alpha=0.45,
            hatch="//",
            label=f"{arch}: auxiliary modules",
        )
        time.bar(xs, [r["ratio_to_bp"] if r else float("nan") for r in mine], width, label=arch)
    for ax, title in ((mem, "memory beyond the weights / BP"), (time, "step time / BP")):
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_xticks(range(len(methods)))
        ax.set_xticklabels(
            [m.replace(":locality=", "\n") for m in methods], rotation=60, ha="right", fontsize=7
        )
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
    mem.legend(fontsize=7)
    time.legend(fontsize=7)
    batch = rows[0]["batch_size"] if rows else "?"
    fig.suptitle(f"one training step, batch {batch} ({rows[0]['device'] if rows else ''})")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
