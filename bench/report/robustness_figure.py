"""The robustness figure: accuracy under FGSM and PGD against the L-inf budget, from the records'
`robustness` (bench/measure/robustness.py)."""

from __future__ import annotations

import numpy as np

from bench.measure.declare import ATTACKS
from bench.record import Record, Run
from bench.report.plotting import figure_legend, groups, line_styles, methods, nothing_to_show, plt
from bench.report.summary import Summary, finished


def _budgets(records: list[Record], kind: str, rule: bool = False) -> dict[float, Summary]:
    """Budget (1/255 units; 0: clean) -> the finished runs' accuracies under attack `kind`, with the true
    gradient, or with `rule` through the rule's own backward (robustness.rule_gradient)."""
    found: dict[float, list[float]] = {}
    for record in finished(records):
        entry = record.robustness or {}
        attacked = ((entry.get("rule_gradient") or {}) if rule else entry).get(kind)
        if attacked:
            found.setdefault(0.0, []).append(entry["clean_acc"])
        for budget, acc in (attacked or {}).items():
            found.setdefault(float(budget), []).append(acc)
    return {budget: Summary.of(found[budget]) for budget in sorted(found)}


def fig_robustness(records: dict[Run, Record], dataset: str):
    """A row per attack, a panel per arch: accuracy against the L-inf budget, a line per method (mean over
    seeds, std error bars); budget 0 is the clean accuracy of the attacked subset. FGSM and PGD with the
    true gradient, then, where records hold it (attack_rule_gradient), PGD through the rule's backward."""
    title = f"{dataset}: accuracy under attack after training"
    by_arch = groups(records)
    rows = [(kind, False) for kind in ATTACKS]
    if any((r.robustness or {}).get("rule_gradient") for r in records.values()):
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
