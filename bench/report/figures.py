"""Figures: one dataset's run records -> {out_dir}/{dataset}_{name}.png and .pdf for every name in FIGURES.

Every file of FIGURES is written, so the pipeline's outputs always exist. A figure whose data the records
lack (the ablation of a grid without SSA variants, the rank figure without SVD layers, robustness or the
weight angle of records without those measures) is not drawn as empty panels: its file holds one line,
`<dataset>: <figure>: nothing to show: <reason>`, and `plot` logs the same line. Accuracy figures use the
runs that finished (`status: ok`); seeds are shown as dots, error bars or bands (sample std). Every mean
and std is bench/report/summary.py's, the one the table uses. This module holds the end-of-training
figures; the per-epoch ones are in bench/report/curves.py.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from bench.record import Record, Run
from bench.report import curves, memory_figure, robustness_figure
from bench.report.plotting import (
    FORMATS,
    Groups,
    colors,
    figure_bytes,
    groups,
    is_empty,
    legend,
    methods,
    nothing_to_show,
    plt,
    save,
)
from bench.report.records import collect
from bench.report.summary import accuracy, finished, mean

__all__ = ["FIGURES", "FORMATS", "figure_bytes", "plot"]
log = logging.getLogger(__name__)

ABLATION = ("bp", "dfa", "ssa", "ssa-no_align", "ssa-no_orth", "ssa-ce_only", "ssa-fixed_rank")


def _bars(ax, by_arch: Groups, shown: list[str], by_method: dict) -> None:
    """Grouped bars: archs along x, one bar per method (mean accuracy, std error bar, one dot per seed)."""
    width = 0.8 / max(len(shown), 1)
    for i, arch in enumerate(by_arch):
        for j, method in enumerate(shown):
            runs = by_arch[arch].get(method, [])
            acc = accuracy(runs)
            x = i - 0.4 + width * (j + 0.5)
            if (
                acc.n_diverged
            ):  # a diverged run is a result: say so where its bar would be, never drop it silently
                ax.text(
                    x,
                    1,
                    f"diverged {acc.n_diverged}/{len(runs)}",
                    ha="center",
                    va="bottom",
                    fontsize=7,
                    rotation=90,
                    color="red",
                )
            if not acc.n:
                continue
            std = 0.0 if np.isnan(acc.std) else acc.std
            ax.bar(
                x, acc.mean, width * 0.9, yerr=std, capsize=3, color=by_method[method], label=method
            )
            if (
                len(shown) * len(by_arch) <= 16
            ):  # more bars leave no room: the table has the numbers
                ax.text(
                    x,
                    max(acc.mean + std, max(acc.values)) + 1.5,
                    f"{acc.mean:.1f}",
                    ha="center",
                    va="bottom",
                    fontsize=7,
                    rotation=90 if len(shown) * len(by_arch) > 8 else 0,
                )
            ax.plot([x] * acc.n, acc.values, "o", color="black", markersize=2.5, zorder=3)
    ax.set_xticks(range(len(by_arch)), list(by_arch))
    ax.set_xlabel("architecture")
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 110)  # headroom for the value labels
    ax.set_yticks(range(0, 101, 20))
    ax.grid(axis="y", alpha=0.3)


def _bar_figure(records: dict[Run, Record], shown: list[str], palette: dict, title: str):
    by_arch = groups(records)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 + 0.5 * len(shown) * max(len(by_arch), 1)), 4.2))
    _bars(ax, by_arch, shown, palette)
    legend(ax, title="method")
    ax.set_title(title)
    return fig


def fig_accuracy(records: dict[Run, Record], dataset: str):
    title = f"{dataset}: test accuracy per method"
    if not records:
        return nothing_to_show(title, "no runs found")
    names = methods(records)  # a method whose every run diverged is still shown, marked
    return _bar_figure(
        records, names, colors(names), f"{title} (bar: mean ± std over seeds; dots: seeds)"
    )


def fig_ablation(records: dict[Run, Record], dataset: str):
    title = f"{dataset}: SSA ablation"
    kept = {run: r for run, r in records.items() if run[1] in ABLATION}
    if not any(m.startswith("ssa") for (_, m, _) in kept):
        return nothing_to_show(title, f"no runs of SSA variants ({', '.join(ABLATION[2:])})")
    if not finished(list(kept.values())):
        return nothing_to_show(title, "no run of bp, dfa or an SSA variant finished")
    shown = [m for m in ABLATION if any(run[1] == m for run in kept)]
    return _bar_figure(
        kept,
        shown,
        colors(methods(records)),
        f"{title}, one loss term or rank reduction removed (mean ± std over seeds)",
    )


def fig_params(records: dict[Run, Record], dataset: str):
    """Accuracy against parameters: a filled marker at the trainable parameters, a hollow one joined to it
    at trainable + feedback parameters (the rule's feedback tensors, fixed or learned)."""
    title = f"{dataset}: accuracy vs parameters"
    by_arch, names = groups(records), methods(records)
    palette, markers = colors(names), dict(zip(by_arch, "osD^v<>ph*"))
    points = [
        (
            arch,
            method,
            accuracy(rs),
            mean(r.trainable_params for r in rs),
            mean(r.feedback_params for r in rs),
        )
        for arch, by_method in by_arch.items()
        for method, rs in by_method.items()
    ]
    points = [p for p in points if p[2].n and not np.isnan(p[3])]
    if not points:
        return nothing_to_show(title, "no runs that finished")
    fig, ax = plt.subplots(figsize=(7.0, 4.5))
    for arch, method, acc, trainable, feedback in points:
        std = 0.0 if np.isnan(acc.std) else acc.std
        ax.errorbar(
            trainable,
            acc.mean,
            yerr=std,
            fmt=markers[arch],
            color=palette[method],
            capsize=3,
            markersize=7,
        )
        if feedback > 0:
            ax.plot(
                [trainable, trainable + feedback],
                [acc.mean, acc.mean],
                color=palette[method],
                linewidth=0.8,
            )
            ax.plot(
                trainable + feedback,
                acc.mean,
                markers[arch],
                color=palette[method],
                markerfacecolor="none",
                markersize=7,
            )
    ax.set_xscale("log")
    low, high = ax.get_xlim()  # label every 1..9 x 10^k over a narrow span, 1/2/5 over a wide one
    ax.xaxis.set_major_locator(
        LogLocator(base=10, subs=range(1, 10) if high / low < 20 else (1.0, 2.0, 5.0))
    )
    ax.xaxis.set_major_formatter(
        FuncFormatter(lambda v, _: f"{v / 1e6:g}M" if v >= 1e6 else f"{v / 1e3:g}k")
    )
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("parameters at the end of training (count, log scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3, which="both")
    handles = [
        plt.Line2D([], [], color=palette[m], marker="o", linestyle="", label=m) for m in names
    ]
    handles += [
        plt.Line2D([], [], color="black", marker=markers[a], linestyle="", label=a) for a in by_arch
    ]
    handles += [
        plt.Line2D([], [], color="grey", marker="o", linestyle="", label="trainable"),
        plt.Line2D(
            [],
            [],
            color="grey",
            marker="o",
            markerfacecolor="none",
            linestyle="-",
            linewidth=0.8,
            label="trainable + feedback",
        ),
    ]
    ax.legend(
        handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="method / arch / count"
    )
    ax.set_title(
        f"{title}: trainable (filled) and trainable + feedback (hollow), mean ± std over seeds",
        fontsize=9,
    )
    return fig


FIGURES: dict[str, Callable] = {
    "accuracy": fig_accuracy,
    "params": fig_params,
    "memory": memory_figure.fig_memory,
    "curves": curves.fig_curves,
    "ablation": fig_ablation,
    "alignment": curves.fig_alignment,
    "update_alignment": curves.fig_update_alignment,
    "rank": curves.fig_rank,
    "robustness": robustness_figure.fig_robustness,
    "weight_angle": curves.fig_weight_angle,
    "weight_norm_ratio": curves.fig_weight_norm_ratio,
}


def plot(
    runs_dir: Path | str, dataset: str, out_dir: Path | str, expected: list[Run] | None = None
) -> list[Path]:
    """Write every figure of FIGURES for `dataset`; `expected` limits them to the planned runs (missing ok)."""
    records, missing = collect(runs_dir, dataset, expected, allow_missing=True)
    if missing:
        log.warning(
            "%s: %d planned run(s) have no record yet; the figures leave them out",
            dataset,
            len(missing),
        )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, draw in FIGURES.items():
        fig = draw(records, dataset)
        if is_empty(fig):
            log.info("%s", fig.axes[0].texts[0].get_text())
        written += save(fig, out_dir / f"{dataset}_{name}")
    log.info("wrote %d figures of %s to %s", len(written), dataset, out_dir)
    return written
