"""claims.md: for each claim of the paper (method.md), the evidence in the records, a verdict, and its conditions.

Verdicts are `supported`, `not supported` or `not run yet` (the runs a claim needs have no record). Every
threshold below is the suite's own [suite]: the paper states its claims in words, not as tests.
  - "comparable to BP" (claim 1): SSA's mean accuracy is at most COMPARABLE_POINTS below BP's on the arch.
  - "matters" (claim 4): removing the term lowers mean accuracy by more than twice the standard error
    of the difference of the two means (about a 95% one-sided test); fewer than 2 seeds cannot show it.
  - "converges faster" (claim 5): SSA's mean curve reaches CONVERGE_SHARE of the lower of the two final
    accuracies in fewer epochs than DFA's does.
  - claims 2 and 3 compare measured quantities directly (params, memory, time; DFA's gap to BP).
A verdict over several (dataset, arch) pairs is `supported` only if every measured pair supports it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from bench.record import Record
from bench.report import markdown as md
from bench.report.summary import Summary, accuracy, diff_se, finished, mean, memory_mb

COMPARABLE_POINTS = 1.0
CONVERGE_SHARE = 0.95
PAPER_DATASETS = ("cifar10", "cifar100", "imagenet")  # the datasets claim 1 names
ABLATIONS = {"ssa-no_align": "alignment", "ssa-no_orth": "orthogonality"}  # claim 4's terms
SUPPORTED, NOT_SUPPORTED, NOT_RUN = "supported", "not supported", "not run yet"


def _cell(acc: Summary) -> str:
    """A group's accuracy as claims.md shows it: mean ± std (n=seeds)."""
    return f"{md.mean_std(acc.mean, acc.std)} (n={acc.n})" if acc.n else md.EMPTY


def _curve(records: list[Record]) -> list[float]:
    """Mean test accuracy per epoch over the finished seeds (as long as the shortest history)."""
    histories = [r.history for r in finished(records) if r.history]
    if not histories:
        return []
    length = min(len(h) for h in histories)
    return [Summary.of(h[i].test_acc for h in histories).mean for i in range(length)]


@dataclass
class Claim:
    number: int
    text: str
    criterion: str
    header: list[str]
    rows: list[list[str]] = field(default_factory=list)
    passes: list[bool] = field(default_factory=list)  # one per measured row
    notes: list[str] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        if not self.passes:
            return NOT_RUN
        return SUPPORTED if all(self.passes) else NOT_SUPPORTED

    def add(self, cells: list, passed: bool) -> None:
        self.rows.append([str(c) for c in cells] + [SUPPORTED if passed else NOT_SUPPORTED])
        self.passes.append(passed)


def _epochs_to(curve: list[float], target: float) -> int | None:
    """1-based epoch at which `curve` first reaches `target`, None if it never does."""
    return next((i + 1 for i, acc in enumerate(curve) if acc >= target), None)


def _pairs(grouped: dict, *methods: str):
    """(dataset, arch, {method: records}, {method: accuracy}) for every (dataset, arch) where every one of
    `methods` has a finished run."""
    for (dataset, arch), by_method in grouped.items():
        accs = {m: accuracy(rs) for m, rs in by_method.items()}
        if all(m in accs and accs[m].n for m in methods):
            yield dataset, arch, by_method, accs


def claim_accuracy(grouped: dict, datasets: list[str]) -> Claim:
    claim = Claim(
        1,
        "SSA reaches accuracy comparable to BP on CIFAR-10, CIFAR-100 and ImageNet.",
        f"SSA's mean test accuracy at most {COMPARABLE_POINTS:g} point below BP's on the same arch "
        "(the earlier version reported VGG-13 on CIFAR-10 within about 0.2 points).",
        ["dataset", "arch", "BP (%)", "SSA (%)", "Δ SSA − BP"],
    )
    for dataset, arch, _, accs in _pairs(grouped, "bp", "ssa"):
        delta = accs["ssa"].mean - accs["bp"].mean
        claim.add(
            [dataset, arch, _cell(accs["bp"]), _cell(accs["ssa"]), f"{delta:+.2f}"],
            delta >= -COMPARABLE_POINTS,
        )
    unrun = [d for d in PAPER_DATASETS if d not in datasets]
    if unrun:
        claim.notes.append(
            f"The paper's datasets not among those checked here: {', '.join(unrun)} (not run yet)."
        )
    return claim


def claim_cost(grouped: dict) -> Claim:
    claim = Claim(
        2,
        "SSA trains fewer parameters than DFA, and cuts memory and compute "
        "(earlier version: about 50% memory, about 40% compute).",
        "SSA's trainable parameters (at the end of training) below DFA's, its training memory "
        "(parameters + gradients + optimizer state + saved activations) below BP's, and its "
        "training time per run below BP's, all on the same arch. Where the records also hold SSA "
        "trained with `locality: blockwise` (one block's graph at a time, the same rule otherwise), "
        "its memory is shown beside and is the one the criterion uses.",
        [
            "dataset",
            "arch",
            "trainable SSA / DFA",
            "memory SSA / BP",
            "memory SSA blockwise / BP",
            "time SSA / BP",
        ],
    )
    memory = ("params", "grads", "optimizer_state", "saved_activations")
    for dataset, arch, runs, accs in _pairs(grouped, "bp", "dfa", "ssa"):
        ssa, dfa, bp = runs["ssa"], runs["dfa"], runs["bp"]
        params = mean(r.trainable_params for r in ssa) / mean(r.trainable_params for r in dfa)
        mem = memory_mb(ssa, *memory) / memory_mb(bp, *memory)
        blockwise = blockwise_twin(runs, accs, "ssa")
        local = memory_mb(blockwise, *memory) / memory_mb(bp, *memory) if blockwise else None
        time = mean(r.train_time_s for r in ssa) / mean(r.train_time_s for r in bp)
        claim.add(
            [
                dataset,
                arch,
                f"{params:.2f}x",
                f"{mem:.2f}x",
                md.EMPTY if local is None else f"{local:.2f}x",
                f"{time:.2f}x",
            ],
            params < 1 and (mem if local is None else local) < 1 and time < 1,
        )
    claim.notes.append(
        "Times are wall-clock training time (evaluation excluded) on the device named under "
        "Conditions; runs that shared a machine make them noisier than the other columns."
    )
    return claim


def blockwise_twin(by_method: dict, accs: dict, method: str) -> list[Record] | None:
    """The runs of `method`'s rule, options and recipe trained with `locality: blockwise`, under any
    variant name in the same (dataset, arch); None where the records hold none that finished."""

    def without_locality(record: Record) -> dict:
        return {k: v for k, v in record.recipe.items() if k != "locality"}

    reference = by_method[method][0]
    for name, runs in by_method.items():
        first = runs[0]
        if (
            name != method
            and first.impl == reference.impl
            and first.options == reference.options
            and first.recipe.get("locality") == "blockwise"
            and without_locality(first) == without_locality(reference)
            and accs[name].n
        ):
            return runs
    return None


def claim_dfa_scaling(grouped: dict) -> Claim:
    claim = Claim(
        3,
        "Plain DFA scales poorly to deep and convolutional networks.",
        "DFA's gap to BP (BP − DFA, points) on every convolutional or deeper arch exceeds its gap on "
        "the dataset's shallowest fully connected arch (or, without one, its shallowest arch).",
        [
            "dataset",
            "arch",
            "blocks",
            "convolutional",
            "BP − DFA",
            "reference arch",
            "reference gap",
        ],
    )
    by_dataset: dict[str, list] = {}
    for dataset, arch, runs, accs in _pairs(grouped, "bp", "dfa"):
        dfa = finished(runs["dfa"])[
            0
        ]  # the arch's facts, as the trainer wrote them (bench/record/types.py)
        by_dataset.setdefault(dataset, []).append(
            (arch, dfa.blocks, dfa.convolutional, accs["bp"].mean - accs["dfa"].mean)
        )
    for dataset, archs in by_dataset.items():
        if len(archs) < 2:
            claim.notes.append(
                f"{dataset}: one arch only ({archs[0][0]}); the claim compares archs."
            )
            continue
        # fully connected first, then fewest blocks (unknown: last)
        reference = min(archs, key=lambda a: (bool(a[2]), math.inf if a[1] is None else a[1]))
        for arch, blocks, conv, gap in archs:
            if arch == reference[0]:
                continue
            claim.add(
                [
                    dataset,
                    arch,
                    md.EMPTY if blocks is None else blocks,
                    "yes" if conv else "no",
                    f"{gap:+.2f}",
                    reference[0],
                    f"{reference[3]:+.2f}",
                ],
                gap > reference[3],
            )
    return claim


def claim_ablation(grouped: dict) -> Claim:
    claim = Claim(
        4,
        "Each loss term (alignment, orthogonality) matters in the low-rank setting.",
        "For each term, ssa minus the variant without it is more than twice the standard error of "
        "that difference (seeds as samples).",
        ["dataset", "arch", "term", "SSA (%)", "without it (%)", "Δ", "2 × SE"],
    )
    for dataset, arch, _, accs in _pairs(grouped, "ssa"):
        for variant, term in ABLATIONS.items():
            if variant not in accs or not accs[variant].n:
                continue
            delta, se = accs["ssa"].mean - accs[variant].mean, diff_se(accs["ssa"], accs[variant])
            claim.add(
                [
                    dataset,
                    arch,
                    term,
                    _cell(accs["ssa"]),
                    _cell(accs[variant]),
                    f"{delta:+.2f}",
                    md.number(2 * se),
                ],
                not math.isnan(se) and delta > 2 * se,
            )
    informative = [
        v
        for v in ("ssa-ce_only", "ssa-fixed_rank")
        if any(v in accs and accs[v].n for _, _, _, accs in _pairs(grouped, "ssa"))
    ]
    if informative:
        claim.notes.append(
            f"Also in the tables, not part of the verdict: {', '.join(informative)}."
        )
    return claim


def claim_convergence(grouped: dict) -> Claim:
    claim = Claim(
        5,
        "SSA converges faster than DFA.",
        f"SSA's mean test-accuracy curve reaches {CONVERGE_SHARE:.0%} of the lower of the two final "
        "mean accuracies in fewer epochs than DFA's curve does.",
        ["dataset", "arch", "target (%)", "epochs SSA", "epochs DFA", "epoch-1 SSA / DFA (%)"],
    )
    for dataset, arch, runs, _ in _pairs(grouped, "ssa", "dfa"):
        ssa, dfa = _curve(runs["ssa"]), _curve(runs["dfa"])
        if not ssa or not dfa:
            continue
        target = CONVERGE_SHARE * min(ssa[-1], dfa[-1])
        e_ssa, e_dfa = _epochs_to(ssa, target), _epochs_to(dfa, target)
        claim.add(
            [dataset, arch, f"{target:.2f}", e_ssa, e_dfa, f"{ssa[0]:.2f} / {dfa[0]:.2f}"],
            e_ssa is not None and (e_dfa is None or e_ssa < e_dfa),
        )
    return claim


CLAIMS = (claim_cost, claim_dfa_scaling, claim_ablation, claim_convergence)


def evaluate(records: list[Record], datasets: list[str]) -> list[Claim]:
    """Every claim of method.md checked against `records` (of `datasets`)."""
    grouped: dict[tuple[str, str], dict[str, list[Record]]] = {}
    for r in records:
        grouped.setdefault((r.dataset, r.arch), {}).setdefault(r.method, []).append(r)
    grouped = dict(
        sorted(grouped.items())
    )  # rows by (dataset, arch), whatever order the records came in
    return [claim_accuracy(grouped, datasets), *(check(grouped) for check in CLAIMS)]
