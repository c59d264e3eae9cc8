"""One summary of a group of runs, used by the table, the figures, claims.md and findings.md alike, so that
a number in a figure and the same number in the table come from the same function.

A group is the runs of one (arch, method), of one sweep point, of one epoch or of one attack budget.
- `accuracy(records)`: the test accuracies of the runs that finished (`status: ok`), each at the epoch its
  record selects (records.reported_acc), with the counts of finished and diverged runs.
- `Summary.of(values)`: the same summary of any values (None left out).
- mean: the plain mean (NaN without values); std: the sample standard deviation (n - 1; NaN for fewer
  than two values); se: the standard error of the mean, std / sqrt(n).
- `diff_se(a, b)`: the standard error of mean(a) - mean(b), each group with its own std (claims.md);
  `pooled_std(groups)` and `pooled_diff_se`: the same with one std pooled over groups (findings.md).
- `mean(values)` and `memory_mb(records, *parts)`: the means of the other columns (counts, times, memory).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from bench.record import Epoch, Record
from bench.report.records import reported_acc

MB = 1e6  # memory is shown in MB (10^6 bytes)


def mean(values: Iterable[float | None]) -> float:
    """Mean of the values that are defined; NaN without any."""
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else math.nan


def sample_std(values: list[float]) -> float:
    """Sample standard deviation (n - 1); NaN for fewer than two values."""
    if len(values) < 2:
        return math.nan
    average = sum(values) / len(values)
    return math.sqrt(sum((v - average) ** 2 for v in values) / (len(values) - 1))


@dataclass(frozen=True)
class Summary:
    """A group's values (those that are defined) and its counts: n_ok runs finished, n_diverged did not."""

    values: tuple[float, ...]
    n_ok: int
    n_diverged: int = 0

    @classmethod
    def of(cls, values: Iterable[float | None]) -> Summary:
        kept = tuple(v for v in values if v is not None)
        return cls(kept, len(kept))

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return mean(self.values)

    @property
    def std(self) -> float:
        return sample_std(list(self.values))

    @property
    def se(self) -> float:
        return self.std / math.sqrt(self.n) if self.n >= 2 else math.nan


def finished(records: list[Record]) -> list[Record]:
    """The runs that finished (`status: ok`) with a test accuracy."""
    return [r for r in records if r.status == "ok" and reported_acc(r) is not None]


def accuracy(records: list[Record]) -> Summary:
    """The group's test accuracy (%): over the finished runs, each at its record's selected epoch."""
    n_ok = sum(1 for r in records if r.status == "ok")
    return Summary(tuple(reported_acc(r) for r in finished(records)), n_ok, len(records) - n_ok)


def memory_mb(records: list[Record], *parts: str) -> float:
    """Mean over the records of the memory `parts` (fields of the record's Memory) summed, in MB; a
    record that measured none of them is left out (NaN when none did)."""
    totals = []
    for record in records:
        measured = [getattr(record.memory, part) for part in parts]
        measured = [v for v in measured if v is not None]
        totals.append(sum(measured) if measured else None)
    return mean(totals) / MB


def per_epoch(records: list[Record], value: Callable[[Epoch], float | None]) -> dict[int, Summary]:
    """Epoch -> the summary over the records of `value(history entry)` (None and non-finite left out)."""
    by_epoch: dict[int, list[float]] = {}
    for record in records:
        for entry in record.history:
            v = value(entry)
            if v is not None and math.isfinite(v):
                by_epoch.setdefault(entry.epoch, []).append(v)
    return {epoch: Summary.of(by_epoch[epoch]) for epoch in sorted(by_epoch)}


def diff_se(a: Summary, b: Summary) -> float:
    """Standard error of a.mean - b.mean, each with its own std; NaN with fewer than two values on either side."""
    if a.n < 2 or b.n < 2:
        return math.nan
    return math.sqrt(a.std**2 / a.n + b.std**2 / b.n)


def pooled_std(groups: Iterable[Summary]) -> tuple[float | None, int]:
    """(std pooled over the groups with two or more values, how many such groups); (None, 0) without any.
    Pooled: sqrt(sum((n - 1) std^2) / sum(n - 1))."""
    multi = [g for g in groups if g.n >= 2]
    freedom = sum(g.n - 1 for g in multi)
    if not freedom:
        return None, 0
    return math.sqrt(float(np.sum(np.array([(g.n - 1) * g.std**2 for g in multi]))) / freedom), len(
        multi
    )


def pooled_diff_se(std: float, n_a: int, n_b: int) -> float:
    """Standard error of the difference of two means over n_a and n_b values that share the std `std`."""
    return std * math.sqrt(1 / n_a + 1 / n_b)
