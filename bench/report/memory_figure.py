"""The memory figure: a stacked bar per rule of what a training step holds (parameters, gradients,
optimizer state, feedback, saved activations), and a row of the feedback part alone."""

from __future__ import annotations

import numpy as np

from bench.record import Record, Run
from bench.report.plotting import (
    groups,
    legend,
    nothing_to_show,
    plt,
)
from bench.report.summary import memory_mb

MEMORY_PARTS = (
    ("params", "parameters"),
    ("grads", "gradients"),
    ("optimizer_state", "optimizer state"),
    ("feedback", "feedback"),
    ("auxiliary", "auxiliary modules"),
    ("saved_activations", "saved activations"),
)


def fig_memory(records: dict[Run, Record], dataset: str):
    """One column per arch: a stacked bar per method of every memory part (feedback hatched), and below
    it the feedback alone with its value, which beside the saved activations is too thin to read."""
    by_arch = groups(records)
    if not by_arch:
        return nothing_to_show(f"{dataset}: training memory", "no runs found")
    widest = max(len(g) for g in by_arch.values())
    fig, axes = plt.subplots(
        2,
        len(by_arch),
        figsize=(1.8 + len(by_arch) * max(3.0, 0.5 * widest), 6.5),
        squeeze=False,
        sharey="row",
        gridspec_kw={"height_ratios": [3, 1.2]},
    )
    palette = plt.get_cmap("tab10")
    for (arch, by_method), top, below in zip(by_arch.items(), axes[0], axes[1]):
        x, stacked = range(len(by_method)), np.zeros(len(by_method))
        for i, (key, label) in enumerate(MEMORY_PARTS):
            values = np.nan_to_num(
                [memory_mb(rs, key) for rs in by_method.values()]
            )  # unmeasured: 0
            top.bar(
                x,
                values,
                0.7,
                bottom=stacked,
                label=label,
                color=palette(i),
                hatch="//" if key == "feedback" else None,
            )
            stacked += values
        feedback = [memory_mb(rs, "feedback") for rs in by_method.values()]
        bars = below.bar(x, np.nan_to_num(feedback), 0.7, color=palette(3), hatch="//")
        below.bar_label(
            bars, labels=["n/a" if np.isnan(v) else f"{v:.2f}" for v in feedback], fontsize=7
        )
        top.set_title(arch)
        top.set_xticks(x, [])
        below.set_xticks(x, list(by_method), rotation=45, ha="right")
        below.set_xlabel("method")
        for ax in (top, below):
            ax.grid(axis="y", alpha=0.3)
        below.margins(y=0.25)  # room for the value labels
    axes[0][0].set_ylabel("memory per training step (MB)")
    axes[1][0].set_ylabel("feedback (MB)")
    legend(axes[0][-1], title="part")
    fig.suptitle(
        f"{dataset}: training memory breakdown (mean over seeds); learned feedback's gradients and "
        "optimizer state are in those parts"
    )
    return fig
