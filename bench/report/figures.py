"""Figures: one dataset's run records -> {out_dir}/{dataset}_{name}.png and .pdf for every name in FIGURES.

Every figure is written even without data (it then says "no runs"), so pipeline outputs always exist.
Accuracy figures use the runs that finished (`status: ok`); seeds are shown as dots or std bands.
"""
from __future__ import annotations

import io
import logging
import math
from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter  # noqa: E402

from bench.report.table import MB, Run, collect, mean_update_alignment, reported_acc  # noqa: E402
from bench.record import write_atomic  # noqa: E402
from bench.robustness import ATTACKS  # noqa: E402
from bench.weight_alignment import layer_mean  # noqa: E402

log = logging.getLogger("bench.plot")

ABLATION = ("bp", "dfa", "ssa", "ssa-no_align", "ssa-no_orth", "ssa-ce_only", "ssa-fixed_rank")
MEMORY_PARTS = (("params", "parameters"), ("grads", "gradients"), ("optimizer_state", "optimizer state"),
                ("feedback", "feedback"), ("saved_activations", "saved activations"))
Groups = dict[str, dict[str, list[dict]]]  # arch -> method -> records (grid order)


def _groups(records: dict[Run, dict], ok_only: bool = False) -> Groups:
    groups: Groups = {}
    for (arch, method, _), record in records.items():
        if ok_only and record["status"] != "ok":
            continue
        groups.setdefault(arch, {}).setdefault(method, []).append(record)
    return groups


def _colors(methods: list[str]) -> dict[str, tuple]:
    """One color per method, the same in every figure of a dataset."""
    cmap = plt.get_cmap("tab10" if len(methods) <= 10 else "tab20")
    return {m: cmap(i % cmap.N) for i, m in enumerate(methods)}


def _line_styles(methods: list[str]) -> dict[str, dict]:
    """Color, dash and marker per method, so lines that coincide (ssa and its ablations) stay visible."""
    colors = _colors(methods)
    return {m: {"color": colors[m], "linestyle": ("-", "--", "-.", ":")[i % 4], "marker": "os^vD<>p"[i % 8]}
            for i, m in enumerate(methods)}


def _no_runs(ax, what: str) -> None:
    ax.text(0.5, 0.5, f"no runs {what}", ha="center", va="center", fontsize=12, transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def records_ok(records: list[dict]) -> list[dict]:
    return [r for r in records if r["status"] == "ok"]


def _accs(records: list[dict]) -> list[float]:
    """The finished runs' accuracies, each at its record's selected epoch (as the table reports them)."""
    return [acc for acc in map(reported_acc, records_ok(records)) if acc is not None]


def _bars(ax, groups: Groups, methods: list[str], colors: dict) -> None:
    """Grouped bars: archs along x, one bar per method (mean accuracy, std error bar, one dot per seed)."""
    width = 0.8 / max(len(methods), 1)
    for i, arch in enumerate(groups):
        for j, method in enumerate(methods):
            runs = groups[arch].get(method, [])
            accs = _accs(runs)
            x = i - 0.4 + width * (j + 0.5)
            diverged = sum(r["status"] == "diverged" for r in runs)
            if diverged:  # a diverged run is a result: say so where its bar would be, never drop it silently
                ax.text(x, 1, f"diverged {diverged}/{len(runs)}", ha="center", va="bottom", fontsize=7,
                        rotation=90, color="red")
            if not accs:
                continue
            std = float(np.std(accs, ddof=1)) if len(accs) > 1 else 0.0
            ax.bar(x, np.mean(accs), width * 0.9, yerr=std, capsize=3, color=colors[method], label=method)
            if len(methods) * len(groups) <= 16:  # more bars leave no room: the table has the numbers
                ax.text(x, max(np.mean(accs) + std, max(accs)) + 1.5, f"{np.mean(accs):.1f}", ha="center",
                        va="bottom", fontsize=7, rotation=90 if len(methods) * len(groups) > 8 else 0)
            ax.plot([x] * len(accs), accs, "o", color="black", markersize=2.5, zorder=3)
    ax.set_xticks(range(len(groups)), list(groups))
    ax.set_xlabel("architecture")
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 110)  # headroom for the value labels
    ax.set_yticks(range(0, 101, 20))
    ax.grid(axis="y", alpha=0.3)


def _legend(ax, **kwargs) -> None:
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    if unique:
        ax.legend(unique.values(), unique.keys(), loc="upper left", bbox_to_anchor=(1.01, 1.0), **kwargs)


def fig_accuracy(records: dict[Run, dict], dataset: str):
    groups = _groups(records)
    methods = list(dict.fromkeys(m for (_, m, _) in records))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 + 0.5 * len(methods) * max(len(groups), 1)), 4.2))
    if not any(rs for g in groups.values() for rs in g.values()):
        _no_runs(ax, "that finished")
    else:
        _bars(ax, groups, methods, _colors(methods))
        _legend(ax, title="method")
    ax.set_title(f"{dataset}: test accuracy per method (bar: mean ± std over seeds; dots: seeds)")
    return fig


def fig_ablation(records: dict[Run, dict], dataset: str):
    methods = list(dict.fromkeys(m for (_, m, _) in records))
    kept = {run: r for run, r in records.items() if run[1] in ABLATION}
    ssa = [m for m in dict.fromkeys(m for (_, m, _) in kept) if m.startswith("ssa")]
    shown = [m for m in ABLATION if any(run[1] == m for run in kept)]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 + 0.5 * len(shown) * max(len(_groups(kept)), 1)), 4.2))
    if not ssa or not any(_accs([r]) for r in kept.values()):
        _no_runs(ax, "of SSA variants")
    else:
        _bars(ax, _groups(kept), shown, _colors(methods))
        _legend(ax, title="method")
    ax.set_title(f"{dataset}: SSA ablation, one loss term or rank reduction removed (mean ± std over seeds)")
    return fig


def fig_params(records: dict[Run, dict], dataset: str):
    groups = _groups(records)
    methods = list(dict.fromkeys(m for (_, m, _) in records))
    colors, markers = _colors(methods), dict(zip(groups, "osD^v<>ph*"))
    fig, ax = plt.subplots(figsize=(7.0, 4.5))
    points = 0
    for arch, by_method in groups.items():
        for method, rs in by_method.items():
            accs = _accs(rs)
            params = [r["trainable_params"] for r in rs if r["status"] == "ok"]
            if not accs:
                continue
            ax.errorbar(np.mean(params), np.mean(accs), yerr=np.std(accs, ddof=1) if len(accs) > 1 else 0,
                        fmt=markers[arch], color=colors[method], capsize=3, markersize=7)
            points += 1
    if not points:
        _no_runs(ax, "that finished")
    else:
        ax.set_xscale("log")
        low, high = ax.get_xlim()  # label every 1..9 x 10^k over a narrow span, 1/2/5 over a wide one
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=range(1, 10) if high / low < 20 else (1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v / 1e6:g}M" if v >= 1e6 else f"{v / 1e3:g}k"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("trainable parameters at the end of training (count, log scale)")
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3, which="both")
        handles = [plt.Line2D([], [], color=colors[m], marker="o", linestyle="", label=m) for m in methods]
        handles += [plt.Line2D([], [], color="black", markerfacecolor="none", marker=markers[a], linestyle="", label=a)
                    for a in groups]
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="method / arch")
    ax.set_title(f"{dataset}: accuracy vs trainable parameters (mean ± std over seeds)")
    return fig


def fig_memory(records: dict[Run, dict], dataset: str):
    """One panel per arch: a stacked bar per method of parameters, gradients, optimizer state, activations."""
    groups = _groups(records)
    widest = max((len(g) for g in groups.values()), default=1)
    fig, axes = plt.subplots(1, max(len(groups), 1), figsize=(1.8 + max(len(groups), 1) * max(3.0, 0.5 * widest), 4.5),
                             squeeze=False, sharey=True)
    if not groups:
        _no_runs(axes[0][0], "")
    for ax, (arch, by_method) in zip(axes[0], groups.items()):
        bottom = np.zeros(len(by_method))
        for key, label in MEMORY_PARTS:
            values = np.array([np.mean([r["memory"].get(key) or 0 for r in rs]) / MB for rs in by_method.values()])
            ax.bar(range(len(by_method)), values, 0.7, bottom=bottom, label=label)
            bottom += values
        ax.set_xticks(range(len(by_method)), list(by_method), rotation=45, ha="right")
        ax.set_title(arch)
        ax.set_xlabel("method")
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("memory per training step (MB)")
    if groups:
        _legend(axes[0][-1], title="part")
    fig.suptitle(f"{dataset}: training memory breakdown (mean over seeds)")
    return fig


def _per_epoch(records: list[dict], value: Callable[[dict], float | None]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(epochs, mean, std) over the records' histories of `value(history entry)`; None entries skipped."""
    by_epoch: dict[int, list[float]] = {}
    for record in records:
        for entry in record["history"]:
            v = value(entry)
            if v is not None and math.isfinite(v):
                by_epoch.setdefault(entry["epoch"], []).append(v)
    epochs = sorted(by_epoch)
    return (np.array(epochs), np.array([np.mean(by_epoch[e]) for e in epochs]),
            np.array([np.std(by_epoch[e]) for e in epochs]))


def _curves(records: dict[Run, dict], dataset: str, title: str, ylabel: str, value, what: str,
            keep: Callable[[str, list[dict]], bool] = lambda m, rs: True):
    """One panel per arch, one line per method: mean of `value` per epoch over seeds, a std band."""
    groups = _groups(records)
    methods = list(dict.fromkeys(m for (_, m, _) in records))
    styles = _line_styles(methods)
    fig, axes = plt.subplots(1, max(len(groups), 1), figsize=(5.0 * max(len(groups), 1) + 1.8, 4.0), squeeze=False)
    lines = 0
    for ax, (arch, by_method) in zip(axes[0], groups.items()):
        for method, rs in by_method.items():
            epochs, mean, std = _per_epoch(rs, value)
            if not keep(method, rs) or not len(epochs):
                continue
            ax.plot(epochs, mean, markersize=4, label=method, **styles[method])
            ax.fill_between(epochs, mean - std, mean + std, color=styles[method]["color"], alpha=0.15)
            lines += 1
        ax.set_title(arch)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    if not lines:
        for ax in axes[0]:
            ax.clear()
            _no_runs(ax, what)
    else:
        handles = {l: h for ax in axes[0] for h, l in zip(*ax.get_legend_handles_labels())}
        axes[0][-1].legend(handles.values(), handles.keys(), loc="upper left", bbox_to_anchor=(1.01, 1.0),
                           title="method")
    fig.suptitle(f"{dataset}: {title}")
    return fig


def fig_curves(records, dataset):
    return _curves(records, dataset, "test accuracy per epoch (mean ± std over seeds)", "test accuracy (%)",
                   lambda h: h.get("test_acc"), "")


def _mean_defined(values) -> float | None:
    """Mean of the values that are defined (a block's cosine is null when its gradient vanished)."""
    defined = [v for v in values or [] if v is not None]
    return float(np.mean(defined)) if defined else None


def fig_alignment(records, dataset):
    return _curves(records, dataset, "alignment of each method's block signal with the BP gradient",
                   "cosine with BP gradient (mean over blocks)",
                   lambda h: _mean_defined(h.get("alignment")), "with block signals (dfa, ssa, ...)")


def fig_update_alignment(records, dataset):
    return _curves(records, dataset, "alignment of each method's parameter update with the BP gradient",
                   "cosine with BP gradient (mean over hidden layers)", mean_update_alignment,
                   "with update alignment")


def fig_rank(records, dataset):
    return _curves(records, dataset, "total rank of the SVD layers per epoch (mean over seeds)",
                   "total rank (sum over SVD layers)", lambda h: sum(h["ranks"].values()) if h.get("ranks") else None,
                   "with SVD layers (svd_bp, ssa variants)")


def _budgets(records: list[dict], kind: str) -> dict[float, list[float]]:
    """Budget (1/255 units; 0: clean) -> the finished runs' accuracies under attack `kind`."""
    found: dict[float, list[float]] = {}
    for record in records_ok(records):
        entry = record.get("robustness") or {}
        if entry.get(kind):
            found.setdefault(0.0, []).append(entry["clean_acc"])
        for budget, acc in (entry.get(kind) or {}).items():
            found.setdefault(float(budget), []).append(acc)
    return dict(sorted(found.items()))


def fig_robustness(records, dataset):
    """A row per attack, a panel per arch: accuracy against the L-inf budget, a line per method (mean over
    seeds, std error bars); budget 0 is the clean accuracy of the attacked subset."""
    groups = _groups(records)
    methods = list(dict.fromkeys(m for (_, m, _) in records))
    styles = _line_styles(methods)
    columns = max(len(groups), 1)
    fig, axes = plt.subplots(len(ATTACKS), columns, figsize=(5.0 * columns + 1.8, 3.6 * len(ATTACKS)), squeeze=False)
    lines = 0
    for row, kind in zip(axes, ATTACKS):
        for ax, (arch, by_method) in zip(row, groups.items()):
            for method, rs in by_method.items():
                by_budget = _budgets(rs, kind)
                if not by_budget:
                    continue
                mean = [np.mean(v) for v in by_budget.values()]
                std = [np.std(v, ddof=1) if len(v) > 1 else 0.0 for v in by_budget.values()]
                ax.errorbar(list(by_budget), mean, yerr=std, capsize=3, markersize=4, label=method, **styles[method])
                lines += 1
            ax.set_title(f"{arch}: {kind.upper()}")
            ax.set_xlabel("L-inf budget (x/255; 0: clean)")
            ax.set_ylabel("test accuracy on the attacked subset (%)")
            ax.grid(alpha=0.3)
    if not lines:
        for ax in axes.flat:
            ax.clear()
            _no_runs(ax, "with robustness measured")
    else:
        handles = {l: h for ax in axes.flat for h, l in zip(*ax.get_legend_handles_labels())}
        axes[0][-1].legend(handles.values(), handles.keys(), loc="upper left", bbox_to_anchor=(1.01, 1.0),
                           title="method")
    fig.subplots_adjust(hspace=0.45)  # room for each row's budget label under it
    fig.suptitle(f"{dataset}: accuracy under attack after training (mean ± std over seeds)")
    return fig


def fig_weight_angle(records, dataset):
    return _curves(records, dataset, "angle between each layer's forward weight W and its feedback weight B",
                   "angle(W, B) in degrees (mean over layers)", lambda h: layer_mean(h, "angle_deg"),
                   "with per-layer feedback weights (fa, usf, brsf, frsf, kp)")


def fig_weight_norm_ratio(records, dataset):
    return _curves(records, dataset, "norm of each layer's feedback weight B relative to its forward weight W",
                   "||B|| / ||W|| (mean over layers)", lambda h: layer_mean(h, "norm_ratio"),
                   "with per-layer feedback weights (fa, usf, brsf, frsf, kp)")


FIGURES: dict[str, Callable] = {"accuracy": fig_accuracy, "params": fig_params, "memory": fig_memory,
                                "curves": fig_curves, "ablation": fig_ablation, "alignment": fig_alignment,
                                "update_alignment": fig_update_alignment,
                                "rank": fig_rank, "robustness": fig_robustness, "weight_angle": fig_weight_angle,
                                "weight_norm_ratio": fig_weight_norm_ratio}
FORMATS = ("png", "pdf")


def figure_bytes(fig, fmt: str, **options) -> bytes:
    """The figure as `fmt` bytes, the same for the same figure: PDFs carry no creation date."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format=fmt, metadata={"CreationDate": None} if fmt == "pdf" else None, **options)
    return buffer.getvalue()


def _save(fig, stem: Path) -> list[Path]:
    """Write the figure as PNG and PDF (tight bounding box, nothing clipped), each atomically."""
    paths = []
    for fmt in FORMATS:
        path = stem.with_name(f"{stem.name}.{fmt}")
        write_atomic(path, figure_bytes(fig, fmt, dpi=150, bbox_inches="tight"))
        paths.append(path)
    plt.close(fig)
    return paths


def plot(runs_dir: Path | str, dataset: str, out_dir: Path | str, expected: list[Run] | None = None) -> list[Path]:
    """Write every figure of FIGURES for `dataset`; `expected` limits them to the planned runs (missing ok)."""
    records, missing = collect(runs_dir, dataset, expected, allow_missing=True)
    if missing:
        log.warning("%s: %d planned run(s) have no record yet; the figures leave them out", dataset, len(missing))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, draw in FIGURES.items():
        written += _save(draw(records, dataset), out_dir / f"{dataset}_{name}")
    log.info("wrote %d figures of %s to %s", len(written), dataset, out_dir)
    return written
