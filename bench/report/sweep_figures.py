"""A sweep's sensitivity figures: per (sweep, option), accuracy against the option's value with the base
point marked, or, for a one-option `grid` sweep (which runs no base point: e.g. K = 2, 4, 8, 16 modules),
its points alone; BP's accuracy on the same network as a dashed line where the table has it
(bench/report/findings.py writes them beside findings.md)."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from bench.files import write_atomic
from bench.report.plotting import FORMATS, figure_bytes, nothing_to_show, plt


def base_label(base: pd.DataFrame, option: str, sweep: dict) -> str:
    """'base (value)': the value the base runs resolved (e.g. the dataset recipe's lr), else the sweep's base."""
    if len(base) and option in base and base[option].iloc[0] is not None:
        return f"base ({base[option].iloc[0]})"
    return f"base ({(sweep.get('base') or {}).get(option, 'default')})"


def sensitivity_figures(
    table: pd.DataFrame, sweeps: dict, dataset: str, out_dir: Path
) -> list[Path]:
    """One figure per (sweep, option): accuracy vs the option's value, the base point marked; a one-option
    grid sweep's points without a base; any other sweep whose base point has no record has nothing to
    show (one line saying so, as in bench/report/figures.py)."""
    written = []
    for name, sweep in sweeps.items():
        rows = table[table["sweep"] == name]
        base = rows[rows["option"] == "base"]
        alone = sweep.get("design") == "grid" and len(sweep["options"]) == 1  # no base point is run
        for option in sweep["options"]:
            these = rows[rows["option"] == option]
            if alone:  # a grid's points in the option's order (K = 2, 4, 8, 16), not their names'
                these = these.sort_values("value", key=lambda v: pd.to_numeric(v, errors="coerce"))
            title = f"{dataset}: {name}, {option}" + ("" if alone else " (others at base)")
            if base.empty and not (alone and len(these)):
                fig = nothing_to_show(title, "the sweep's base point has no record")
            else:
                fig, ax = plt.subplots(figsize=(5, 3.5))
                labels = [*([] if alone else [base_label(base, option, sweep)]), *these["value"]]
                means = [*([] if alone else base["test_acc_mean"]), *these["test_acc_mean"]]
                stds = [*([] if alone else base["test_acc_std"]), *these["test_acc_std"]]
                ax.errorbar(
                    range(len(labels)),
                    means,
                    yerr=[0 if math.isnan(s) else s for s in stds],
                    fmt="o",
                    capsize=3,
                )
                if not alone:
                    ax.axhline(means[0], color="grey", linewidth=0.8, linestyle=":")
                bp = (rows["test_acc_mean"] - rows["delta_to_bp"]).dropna()
                if len(bp):  # delta_to_bp = accuracy - BP's on the same network: BP's line
                    ax.axhline(bp.iloc[0], color="black", linewidth=0.8, linestyle="--", label="bp")
                    ax.legend(fontsize=8)
                ax.set_xticks(range(len(labels)), labels, rotation=20)
                ax.set_xlabel(option)
                ax.set_ylabel("test accuracy (%)")
                ax.set_title(title, fontsize=9)
                fig.tight_layout()
            for ext in FORMATS:
                path = out_dir / "figures" / f"{dataset}_{name}_{option}.{ext}"
                path.parent.mkdir(parents=True, exist_ok=True)
                write_atomic(path, figure_bytes(fig, ext, dpi=120))
                written.append(path)
            plt.close(fig)
    return written
