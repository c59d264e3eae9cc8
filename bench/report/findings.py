"""A sweep's results: its table (option values as columns), a sensitivity figure per option, findings.md.

Reads the records of one dataset and the sweeps of the config files (bench/config/sweep.py). The reference rows
are BP on the best SSA point's network (`bp_reference`) and the DFA baseline (the first of: a sweep of
impl dfa's base point, `dfa`). An option
"matters" [suite] when one of its values differs from the base point by more than twice the standard
error of that difference, 2 s sqrt(1/n_base + 1/n_value), with s the seed std pooled over the sweep's
points that have 2 or more seeds (a single base std from 3 seeds is too uncertain to judge by: it was
0.17 points in issue 9's stage 2 against 0.3-1.1 at other points). Without any such point the rule is a
difference of more than NOISE_FALLBACK points. findings.md states which rule each sweep used.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from bench.config.sweep import points, value_name
from bench.files import write_atomic
from bench.record import Record
from bench.report import markdown as md
from bench.report.summary import (
    Summary,
    accuracy,
    finished,
    mean,
    memory_mb,
    pooled_diff_se,
    pooled_std,
)
from bench.report.sweep_figures import sensitivity_figures
from bench.report.table import write_csv

NOISE_FALLBACK = 1.0
MEMORY = ("params", "grads", "optimizer_state", "saved_activations")


def _by_method(records: list[Record]) -> dict[str, list[Record]]:
    by_method: dict[str, list[Record]] = {}
    for r in records:
        by_method.setdefault(r.method, []).append(r)
    return by_method


def _stats(records: list[Record], acc: Summary) -> dict[str, Any]:
    """One sweep point's columns: `acc` is its accuracy summary."""
    return {
        "n_seeds": len(records),
        "n_ok": acc.n_ok,
        "test_acc_mean": acc.mean,
        "test_acc_std": acc.std,
        "trainable_params": mean(r.trainable_params for r in records),
        "feedback_params": mean(r.feedback_params for r in records),
        "train_memory_mb": memory_mb(records, *MEMORY),
        "train_time_s": mean(r.train_time_s for r in finished(records)),
        "status": "ok"
        if acc.n_ok == len(records)
        else f"diverged {len(records) - acc.n_ok}/{len(records)}",
    }


def accuracies(records: list[Record]) -> dict[str, Summary]:
    """Each method variant's accuracy summary, in the order the records came."""
    return {method: accuracy(mine) for method, mine in _by_method(records).items()}


def sweep_table(
    records: list[Record], sweeps: dict, accs: dict[str, Summary] | None = None
) -> pd.DataFrame:
    """One row per method variant found: sweep, option varied, its value, stats, then every swept key;
    `accs`: the variants' accuracies() if already summarised."""
    keys = list(
        dict.fromkeys(k for s in sweeps.values() for k in [*(s.get("base") or {}), *s["options"]])
    )
    varied = {}
    for name, sweep in sweeps.items():
        base = sweep.get("base") or {}
        for variant, settings in points(name, sweep).items():
            changed = {k: v for k, v in settings.items() if base.get(k, object()) != v}
            varied[variant] = (
                name,
                ", ".join(changed) or "base",
                ", ".join(map(str, changed.values())),
            )
    rows, accs = [], accs or accuracies(records)
    for method, mine in _by_method(records).items():
        sweep, option, value = varied.get(method, ("", "", ""))
        settings = {**mine[0].recipe, **mine[0].options}
        rows.append(
            {
                "method": method,
                "impl": mine[0].impl or method,
                "sweep": sweep,
                "option": option,
                "value": value,
                **_stats(mine, accs[method]),
                **{k: _cell(settings.get(k)) for k in keys},
            }
        )
    table = pd.DataFrame(rows)
    bp = table.loc[table["method"] == "bp", "test_acc_mean"]
    table["delta_to_bp"] = table["test_acc_mean"] - (bp.iloc[0] if len(bp) else math.nan)
    return table


def _cell(value: Any) -> Any:
    return value_name(value) if isinstance(value, (list, tuple)) else value


def _dfa_reference(table: pd.DataFrame, sweeps: dict) -> pd.Series | None:
    names = [f"{n}-base" for n, s in sweeps.items() if s["impl"] == "dfa"] + ["dfa"]
    rows = table[table["method"].isin(names)]
    return rows.iloc[0] if len(rows) else None


def bp_reference(table: pd.DataFrame, best: pd.Series) -> pd.Series | None:
    """The BP row to compare `best` with: on the same network (its `batchnorm`, when that key is swept),
    else the plain `bp` variant."""
    bps = table[(table["impl"] == "bp") & table["test_acc_mean"].notna()]
    if "batchnorm" in table:
        same = bps[bps["batchnorm"].map(_is_true) == _is_true(best["batchnorm"])]
        bps = same if len(same) else bps
    plain = bps[bps["method"] == "bp"]
    bps = plain if len(plain) else bps
    return bps.iloc[0] if len(bps) else None


def _is_true(value: Any) -> bool:
    return value is True or value == 1  # None or NaN (records from before the key existed): False


def findings(
    table: pd.DataFrame, sweeps: dict, conditions: list[str], accs: dict[str, Summary]
) -> str:
    """findings.md: best SSA configuration, its margins, which options matter, their costs; `accs` holds
    each variant's accuracy summary (accuracies())."""
    lines = [
        "# SSA's design space: findings",
        "",
        "Generated by `python -m bench sweep-report` from the run "
        "records; thresholds are the suite's [suite].",
        "",
        "## Conditions",
        "",
    ]
    lines += [f"- {c}" for c in conditions]
    ssa = table[(table["impl"] == "ssa") & table["test_acc_mean"].notna()]
    dfa = _dfa_reference(table, sweeps)
    lines += ["", "## Best SSA configuration", ""]
    if ssa.empty:
        lines.append("No SSA run finished.")
    else:
        best = ssa.loc[ssa["test_acc_mean"].idxmax()]
        lines.append(
            f"- `{best['method']}` ({best['option']} = {best['value'] or 'base'}): "
            f"{md.mean_std(best['test_acc_mean'], best['test_acc_std'])} % over {best['n_ok']} seed(s)."
        )
        if dfa is not None:
            lines.append(
                f"- Margin over DFA (`{dfa['method']}`, {md.mean_std(dfa['test_acc_mean'], dfa['test_acc_std'])} %): "
                f"{best['test_acc_mean'] - dfa['test_acc_mean']:+.2f} points."
            )
            dfas = table[(table["impl"] == "dfa") & table["test_acc_mean"].notna()]
            top = dfas.loc[dfas["test_acc_mean"].idxmax()]
            lines.append(
                f"- Margin over the best DFA found (`{top['method']}`, {top['test_acc_mean']:.2f} %): "
                f"{best['test_acc_mean'] - top['test_acc_mean']:+.2f} points."
            )
        reference = bp_reference(table, best)
        if reference is not None:
            network = (
                "on the same network"
                if "batchnorm" not in table
                or _is_true(reference["batchnorm"]) == _is_true(best["batchnorm"])
                else "on another network: none ran with this one's batchnorm"
            )
            lines.append(
                f"- Gap to BP {network} (`{reference['method']}`, "
                f"{md.mean_std(reference['test_acc_mean'], reference['test_acc_std'])} %): "
                f"{best['test_acc_mean'] - reference['test_acc_mean']:+.2f} points."
            )
        lines.append(
            f"- Cost: {best['trainable_params'] / 1e3:.1f} k trainable parameters, "
            f"{best['train_memory_mb']:.1f} MB training memory, {best['train_time_s']:.0f} s training."
        )
    lines += ["", "## Which options matter", ""]
    for name, sweep in sweeps.items():
        rows = table[table["sweep"] == name]
        base = rows[(rows["option"] == "base")]
        if base.empty:
            lines.append(f"- sweep `{name}`: its base point has no record.")
            continue
        if (
            not base.iloc[0]["n_ok"] >= 1
        ):  # every seed diverged: nothing to compare the options with
            lines.append(f"- sweep `{name}`: its base point has no finished run.")
            continue
        base = base.iloc[0]
        std, points_used = pooled_std(accs[method] for method in rows["method"])
        rule = (
            f"noise: seed std {std:.2f} pooled over {points_used} multi-seed points; a value matters when "
            "its difference exceeds 2 SE of the difference"
            if std is not None
            else f"noise: no point has 2 seeds; a value matters when its difference exceeds {NOISE_FALLBACK:g} point"
        )
        lines.append(
            f"- sweep `{name}` (impl {sweep['impl']}, base {md.mean_std(base['test_acc_mean'], base['test_acc_std'])} %; "
            f"{rule}):"
        )
        for option in sweep["options"]:
            these = rows[(rows["option"] == option) & rows["test_acc_mean"].notna()]
            if these.empty:
                continue
            effects, matters = [], False
            for value, method in zip(these["value"], these["method"]):
                difference = accs[method].mean - accs[base["method"]].mean
                limit = noise_limit(std, accs[base["method"]].n, accs[method].n)
                matters |= abs(difference) > limit
                effects.append(
                    f"{value}: {difference:+.2f} ({'>' if abs(difference) > limit else '<='} {limit:.2f})"
                )
            verdict = "matters" if matters else "does not matter here"
            lines.append(f"  - `{option}` {verdict} (vs base {', '.join(effects)})")
    lines += ["", "## Cost of each configuration", ""]
    lines += md.table(
        [
            "method",
            "test acc (%)",
            "Δ to BP",
            "trainable params",
            "feedback params",
            "train memory (MB)",
            "train time (s)",
        ],
        [
            [
                row.method,
                md.mean_std(row.test_acc_mean, row.test_acc_std),
                f"{row.delta_to_bp:+.2f}",
                f"{row.trainable_params / 1e3:.1f} k",
                f"{row.feedback_params / 1e3:.1f} k",
                f"{row.train_memory_mb:.1f}",
                f"{row.train_time_s:.0f}",
            ]
            for row in table.itertuples()
        ],
    )
    return "\n".join(lines) + "\n"


def noise_limit(std: float | None, n_base: int, n_value: int) -> float:
    """Twice the standard error of a difference of two means over n_base and n_value seeds that share the
    pooled seed std `std`, or the fallback without one."""
    return 2 * pooled_diff_se(std, n_base, n_value) if std is not None else NOISE_FALLBACK


def _markdown(table: pd.DataFrame, dataset: str) -> str:
    def cell(value):
        return md.number(value, "{:.4g}") if isinstance(value, float) else str(value)

    lines = [f"# {dataset}: sweep (one row per variant; option values as columns)", ""]
    lines += md.table(
        list(table.columns), [[cell(v) for v in row] for row in table.itertuples(index=False)]
    )
    return "\n".join(lines) + "\n"


def report(records: list[Record], sweeps: dict, dataset: str, out_dir: Path | str) -> pd.DataFrame:
    """Write out_dir/{dataset}_sweep.csv|md, figures/{dataset}_{sweep}_{option}.png|pdf and findings.md."""
    from bench.report.claims.markdown import conditions

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    records = [r for r in records if r.dataset == dataset]
    if not records:
        raise FileNotFoundError(f"no records of {dataset} given")
    accs = accuracies(records)
    table = sweep_table(records, sweeps, accs)
    write_csv(table, out_dir / f"{dataset}_sweep.csv")
    write_atomic(out_dir / f"{dataset}_sweep.md", _markdown(table, dataset).encode())
    sensitivity_figures(table, sweeps, dataset, out_dir)
    write_atomic(
        out_dir / "findings.md", findings(table, sweeps, conditions(records), accs).encode()
    )
    return table
