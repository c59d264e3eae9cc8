"""The records a report reads: the typed records of bench/record/types.py collected for the planned runs, and
the values of one record that the reports show (the accuracy a table reports, the update alignment, the
robust accuracy, the weight alignment's mean over layers, a declared measure's value), and the warnings
of a table about where its records come from (provenance_notes).

Records are read by bench/record/types.py (read, find) alone; every report module summarises them through
bench/report/summary.py.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from pathlib import Path

from bench import layout
from bench.measure.declare import Measure
from bench.record import Epoch, Record, Run, find

log = logging.getLogger(__name__)

TABLE_BUDGET = "2"  # the table's robust accuracy: PGD at 2/255, where the suite's small CPU-scale nets still differ


def collect(
    runs_dir: Path | str,
    dataset: str,
    expected: list[Run] | None = None,
    allow_missing: bool = False,
) -> tuple[dict[Run, Record], list[Run]]:
    """(records by run, missing runs). With `expected`, only planned runs count; a missing one is an error
    naming the record paths unless `allow_missing`."""
    found = find(runs_dir, dataset)
    if expected is None:
        return found, []
    expected = [(a, m, int(s)) for a, m, s in expected]
    extra = len(set(found) - set(expected))
    if extra:
        log.info("%s: %d record(s) outside the planned grid are not in the table", dataset, extra)
    missing = [run for run in expected if run not in found]
    if missing and not allow_missing:
        paths = [str(layout.record_path(runs_dir, dataset, *run)) for run in missing]
        more = f" and {len(paths) - 10} more" if len(paths) > 10 else ""
        raise FileNotFoundError(
            f"{len(missing)} planned run(s) of {dataset} have no record: "
            f"{', '.join(paths[:10])}{more}; run them, or pass --allow-missing"
        )
    return {run: found[run] for run in expected if run in found}, missing


def reported_acc(record: Record) -> float | None:
    """The test accuracy a table reports: at the record's selected epoch (the best on validation where the run
    held a validation split, `selection: best_val`), else at the last epoch (and for a record written
    before the selection was)."""
    return record.test_acc if record.selection is None else record.selected_test_acc


def robust_acc(record: Record, kind: str = "pgd", budget: str = TABLE_BUDGET) -> float | None:
    """The record's accuracy (%) under attack `kind` at `budget` (1/255 units), None where not measured."""
    return ((record.robustness or {}).get(kind) or {}).get(budget)


def final_update_alignment(record: Record) -> float | None:
    """The last epoch's update alignment, mean over the hidden layers where it is defined (None: not measured).

    Per layer it is the cosine between the rule's parameter update and the true BP gradient on the probe
    batch (bench/measure/network.py update_alignment): 1 for BP, below 1 for any rule that departs from it. The
    head is left out: every local rule trains it with its true gradient, so its 1 would lift them all.
    """
    return mean_update_alignment(record.last) if record.last else None


def mean_update_alignment(entry: Epoch) -> float | None:
    """One history entry's update alignment, mean over its hidden layers (not the head) where defined."""
    layers = entry.update_alignment or {}
    defined = [
        v
        for name, v in layers.items()
        if name != "head" and not name.startswith("head.") and v is not None and math.isfinite(v)
    ]
    return sum(defined) / len(defined) if defined else None


def layer_mean(alignment: dict | None, measure: str) -> float | None:
    """The mean over layers of one epoch's weight alignment `measure` ("angle_deg" or "norm_ratio",
    bench/measure/weight_alignment.py); None without one (the rule has no per-layer feedback, or the record
    predates the measure)."""
    values = [v for v in ((alignment or {}).get(measure) or {}).values() if v is not None]
    return sum(values) / len(values) if values else None


def declared_value(record: Record, measure: Measure) -> float | None:
    """A declared measure's value in a table (bench/measure/declare.py): at the epoch the table reports
    (the selected epoch, else the last) for a per-epoch one, the record's for an end-of-run one; a
    per-block list's mean over its defined blocks. None where the record has none (it predates the
    measure, or the measure was undefined)."""
    if measure.when == "epoch":
        chosen = [e for e in record.history if e.epoch == record.selected_epoch] or [record.last]
        values = (chosen[0].measures if chosen[0] else None) or {}
    else:
        values = record.measures or {}
    value = values.get(measure.name)
    if isinstance(value, list):
        defined = [v for v in value if v is not None]
        return sum(defined) / len(defined) if defined else None
    return value


def provenance_notes(records: list[Record], dataset: str) -> list[str]:
    """Warnings (also logged) when the records come from several git commits or from uncommitted code."""
    notes = []
    sources = [r.provenance for r in records]
    commits = Counter(str(p.git_commit or "unknown") for p in sources)
    if len(commits) > 1:
        listed = ", ".join(f"{c[:10]} ({n} runs)" for c, n in commits.most_common())
        notes.append(f"the rows mix records from {len(commits)} git commits: {listed}")
    dirty = sum(1 for p in sources if p.git_dirty)
    if dirty:
        notes.append(
            f"{dirty} of {len(records)} runs ran on a working tree with uncommitted changes (git_dirty)"
        )
    for note in notes:
        log.warning("%s: %s", dataset, note)
    return notes
