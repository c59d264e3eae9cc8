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

from bench.report import curves
from bench.report.plotting import (
    FORMATS,
    Groups,
    colors,
    figure_bytes,
    figure_legend,
    groups,
    is_empty,
    legend,
    line_styles,
    methods,
    nothing_to_show,
    plt,
    save,
)
from bench.report.records import Run, collect
from bench.report.summary import Summary, accuracy, finished, mean, memory_mb
from bench.robustness import ATTACKS

__all__ = ["FIGURES", "FORMATS", "figure_bytes", "plot"]
log = logging.getLogger(__name__)

ABLATION = ("bp", "dfa", "ssa", "ssa-no_align", "ssa-no_orth", "ssa-ce_only", "ssa-fixed_rank")
MEMORY_PARTS = (
    ("params", "parameters"),
    ("grads", "gradients"),
    ("optimizer_state", "optimizer state"),
    ("feedback", "feedback"),
    ("saved_activations", "saved activations"),
)


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


def _bar_figure(records: dict[Run, dict], shown: list[str], palette: dict, title: str):
    by_arch = groups(records)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 + 0.5 * len(shown) * max(len(by_arch), 1)), 4.2))
    _bars(ax, by_arch, shown, palette)
    legend(ax, title="method")
    ax.set_title(title)
    return fig


def fig_accuracy(records: dict[Run, dict], dataset: str):
    title = f"{dataset}: test accuracy per method"
    if not records:
        return nothing_to_show(title, "no runs found")
    names = methods(records)  # a method whose every run diverged is still shown, marked
    return _bar_figure(
        records, names, colors(names), f"{title} (bar: mean ± std over seeds; dots: seeds)"
    )


def fig_ablation(records: dict[Run, dict], dataset: str):
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


def fig_params(records: dict[Run, dict], dataset: str):
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
            mean(r.get("trainable_params") for r in rs),
            mean(r.get("feedback_params") for r in rs),
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


def fig_memory(records: dict[Run, dict], dataset: str):
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


def _budgets(records: list[dict], kind: str, rule: bool = False) -> dict[float, Summary]:
    """Budget (1/255 units; 0: clean) -> the finished runs' accuracies under attack `kind`, with the true
    gradient, or with `rule` through the rule's own backward (robustness.rule_gradient)."""
    found: dict[float, list[float]] = {}
    for record in finished(records):
        entry = record.get("robustness") or {}
        attacked = ((entry.get("rule_gradient") or {}) if rule else entry).get(kind)
        if attacked:
            found.setdefault(0.0, []).append(entry["clean_acc"])
        for budget, acc in (attacked or {}).items():
            found.setdefault(float(budget), []).append(acc)
    return {budget: Summary.of(found[budget]) for budget in sorted(found)}


def fig_robustness(records: dict[Run, dict], dataset: str):
    """A row per attack, a panel per arch: accuracy against the L-inf budget, a line per method (mean over
    seeds, std error bars); budget 0 is the clean accuracy of the attacked subset. FGSM and PGD with the
    true gradient, then, where records hold it (attack_rule_gradient), PGD through the rule's backward."""
    title = f"{dataset}: accuracy under attack after training"
    by_arch = groups(records)
    rows = [(kind, False) for kind in ATTACKS]
    if any((r.get("robustness") or {}).get("rule_gradient") for r in records.values()):
        rows.append(("pgd", True))
    lines = {
        (kind, rule, arch, method): _budgets(rs, kind, rule)
        for kind, rule in rows
        for arch, by_method in by_arch.items()
        for method, rs in by_method.items()
    }
    if not any(lines.values()):
        return nothing_to_show(
            title, "no record holds robustness (measured where the recipe's attack_subset > 0)"
        )
    styles = line_styles(methods(records))
    fig, axes = plt.subplots(
        len(rows),
        len(by_arch),
        figsize=(5.0 * len(by_arch) + 1.8, 3.6 * len(rows)),
        squeeze=False,
    )
    for row, (kind, rule) in zip(axes, rows):
        for ax, (arch, by_method) in zip(row, by_arch.items()):
            for method in by_method:
                by_budget = lines[kind, rule, arch, method]
                if by_budget:
                    std = [0.0 if np.isnan(s.std) else s.std for s in by_budget.values()]
                    ax.errorbar(
                        list(by_budget),
                        [s.mean for s in by_budget.values()],
                        yerr=std,
                        capsize=3,
                        markersize=4,
                        label=method,
                        **styles[method],
                    )
            how = "through the rule's own backward (BioTorch's attack)" if rule else "true gradient"
            ax.set_title(f"{arch}: {kind.upper()}, {how}")
            ax.set_xlabel("L-inf budget (x/255; 0: clean)")
            ax.set_ylabel("test accuracy on the attacked subset (%)")
            ax.grid(alpha=0.3)
    figure_legend(fig, axes)
    fig.subplots_adjust(hspace=0.45)  # room for each row's budget label under it
    fig.suptitle(f"{title} (mean ± std over seeds)")
    return fig


FIGURES: dict[str, Callable] = {
    "accuracy": fig_accuracy,
    "params": fig_params,
    "memory": fig_memory,
    "curves": curves.fig_curves,
    "ablation": fig_ablation,
    "alignment": curves.fig_alignment,
    "update_alignment": curves.fig_update_alignment,
    "rank": curves.fig_rank,
    "robustness": fig_robustness,
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
