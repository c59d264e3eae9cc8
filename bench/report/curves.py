"""The per-epoch figures: one panel per arch, one line per method, the mean over seeds of a history
measure at each epoch with a band of ± its sample std (bench/report/summary.py per_epoch). A figure whose
measure no record holds has nothing to show (bench/report/figures.py says how that is written)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from matplotlib.ticker import MaxNLocator

from bench.record import Record, Run
from bench.report.plotting import figure_legend, groups, line_styles, methods, nothing_to_show, plt
from bench.report.records import layer_mean, mean_update_alignment
from bench.report.summary import mean, per_epoch

PER_LAYER_FEEDBACK = (
    "no record holds the per-layer W and B measures (rules with per-layer feedback weights "
    "have them: fa, usf, brsf, frsf, kp; records before issue 21 do not)"
)


def _curves(
    records: dict[Run, Record],
    dataset: str,
    title: str,
    ylabel: str,
    value: Callable[[dict], float | None],
    reason: str,
):
    """One panel per arch, one line per method: mean of `value` per epoch over seeds, a std band."""
    by_arch = groups(records)
    lines = {
        (arch, method): per_epoch(rs, value)
        for arch, by_method in by_arch.items()
        for method, rs in by_method.items()
    }
    if not any(lines.values()):
        return nothing_to_show(f"{dataset}: {title}", reason)
    styles = line_styles(methods(records))
    fig, axes = plt.subplots(
        1, len(by_arch), figsize=(5.0 * len(by_arch) + 1.8, 4.0), squeeze=False
    )
    for ax, (arch, by_method) in zip(axes[0], by_arch.items()):
        for method in by_method:
            by_epoch = lines[arch, method]
            if not by_epoch:
                continue
            epochs = list(by_epoch)
            means = np.array([s.mean for s in by_epoch.values()])
            stds = np.array([0.0 if np.isnan(s.std) else s.std for s in by_epoch.values()])
            ax.plot(epochs, means, markersize=4, label=method, **styles[method])
            ax.fill_between(
                epochs, means - stds, means + stds, color=styles[method]["color"], alpha=0.15
            )
        ax.set_title(arch)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    figure_legend(fig, axes)
    fig.suptitle(f"{dataset}: {title}")
    return fig


def fig_curves(records, dataset):
    return _curves(
        records,
        dataset,
        "test accuracy per epoch (mean ± std over seeds)",
        "test accuracy (%)",
        lambda h: h.test_acc,
        "no record holds a per-epoch test accuracy",
    )


def fig_alignment(records, dataset):
    # a block's cosine is null when its gradient vanished: the mean is over the blocks where it is defined
    return _curves(
        records,
        dataset,
        "alignment of each method's block signal with the BP gradient",
        "cosine with BP gradient (mean over blocks)",
        lambda h: mean(h.alignment or []),
        "no record holds block-signal alignment (rules with block signals: dfa, ssa, ...)",
    )


def fig_update_alignment(records, dataset):
    return _curves(
        records,
        dataset,
        "alignment of each method's parameter update with the BP gradient",
        "cosine with BP gradient (mean over hidden layers)",
        mean_update_alignment,
        "no record holds update alignment",
    )


def fig_rank(records, dataset):
    return _curves(
        records,
        dataset,
        "total rank of the SVD layers per epoch (mean over seeds)",
        "total rank (sum over SVD layers)",
        lambda h: sum(h.ranks.values()) if h.ranks else None,
        "no runs with SVD layers (svd_bp, ssa variants)",
    )


def fig_weight_angle(records, dataset):
    return _curves(
        records,
        dataset,
        "angle between each layer's forward weight W and its feedback weight B",
        "angle(W, B) in degrees (mean over layers)",
        lambda h: layer_mean(h.weight_alignment, "angle_deg"),
        PER_LAYER_FEEDBACK,
    )


def fig_weight_norm_ratio(records, dataset):
    return _curves(
        records,
        dataset,
        "norm of each layer's feedback weight B relative to its forward weight W",
        "||B|| / ||W|| (mean over layers)",
        lambda h: layer_mean(h.weight_alignment, "norm_ratio"),
        PER_LAYER_FEEDBACK,
    )
