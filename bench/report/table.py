"""Tables: one dataset's run records -> one row per (arch, method variant) in {dataset}_table.csv and .md.

Accuracy is the mean +- sample std over the seeds that finished (`status: ok`), each at the epoch its
record selects (`selection`: the last, or the best on a validation split: BioTorch's protocol); a diverged run is left
out of the mean and counted in `status`; a planned run without a record is counted as missing. Params
and memory are means over every record found (they do not depend on divergence); memory is in MB
(10^6 bytes), as measured by the trainer (bench/measure/network.py). Every mean and std is bench/report/summary.py's,
the one the figures use too; the markdown is bench/report/markdown.py's.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

import pandas as pd

from bench.files import writable_folder, write_atomic
from bench.layout import PUBLISHED
from bench.measure import declare
from bench.measure.declare import Measure
from bench.record import Record, Run
from bench.record.check import COUNTS
from bench.report import markdown as md
from bench.report.published import named, published, shown_beside
from bench.report.records import (
    TABLE_BUDGET,
    collect,
    declared_value,
    final_update_alignment,
    provenance_notes,
    robust_acc,
)
from bench.report.summary import accuracy, finished, mean, memory_mb

log = logging.getLogger(__name__)

MEMORY = {
    "params_mb": "params",
    "grads_mb": "grads",
    "optimizer_state_mb": "optimizer_state",
    "feedback_mb": "feedback",
    "saved_activations_mb": "saved_activations",
    "peak_mb": "peak",
}
# The training-only modules' parameters, gradients and optimizer state (bench.local.register_auxiliary):
# a column only where a record has the measure, so tables of older records keep their columns.
AUXILIARY = {"auxiliary_mb": "auxiliary"}
COLUMNS = [
    "arch",
    "method",
    "n_seeds",
    "n_ok",
    "n_diverged",
    "n_missing",
    "epochs",
    "selection",
    "test_acc_mean",
    "test_acc_std",
    "delta_to_bp",
    "best_test_acc_mean",
    "update_alignment",
    "ece",
    "pgd_acc",
    *COUNTS,
    *MEMORY,
    "train_time_s_mean",
    "images_per_s_mean",
    "status",
    "published",
]


def _row(
    arch: str, method: str, records: list[Record], n_missing: int, shown: list[Measure]
) -> dict:
    acc, ok = accuracy(records), finished(records)
    n_seeds = len(records) + n_missing
    status = [f"diverged {acc.n_diverged}/{n_seeds}"] if acc.n_diverged else []
    status += [f"missing {n_missing}/{n_seeds}"] if n_missing else []
    epochs = sorted({r.epochs_planned for r in records} - {None})
    row = {
        "arch": arch,
        "method": method,
        "n_seeds": n_seeds,
        "n_ok": acc.n_ok,
        "n_diverged": acc.n_diverged,
        "n_missing": n_missing,
        "epochs": "/".join(map(str, epochs)),
        "selection": "/".join(sorted({r.selection or "last" for r in ok})),
        "test_acc_mean": acc.mean,
        "test_acc_std": acc.std,
        "best_test_acc_mean": mean(r.best_test_acc for r in ok),
        "update_alignment": mean(final_update_alignment(r) for r in ok),
        "ece": mean(r.ece for r in ok),  # records before issue 21 have none: empty
        "pgd_acc": mean(robust_acc(r) for r in ok),
    }
    row |= {m.name: mean(declared_value(r, m) for r in ok) for m in shown}
    row |= {key: mean(getattr(r, key) for r in records) for key in COUNTS}
    row |= {col: memory_mb(records, key) for col, key in (MEMORY | AUXILIARY).items()}
    row |= {
        "train_time_s_mean": mean(r.train_time_s for r in ok),
        "images_per_s_mean": mean(r.images_per_s for r in ok),
        "status": ", ".join(status) or "ok",
    }
    return row


def shown_measures(records: list[Record]) -> list[Measure]:
    """The declared measures with a table column that some record holds (bench/measure/declare.py):
    a table of records from before a measure existed keeps the columns it had."""
    return [
        m
        for m in declare.declared().values()
        if m.column and any(declared_value(r, m) is not None for r in records)
    ]


def table_columns(shown: list[Measure], auxiliary: bool = False) -> list[str]:
    """The csv's columns: COLUMNS, with the shown declared measures' after the PGD accuracy and, where
    `auxiliary`, the auxiliary modules' memory after the feedback's."""
    at, memory = COLUMNS.index("pgd_acc") + 1, COLUMNS.index("feedback_mb") + 1
    aux = list(AUXILIARY) if auxiliary else []
    names = [m.name for m in shown]
    return [*COLUMNS[:at], *names, *COLUMNS[at:memory], *aux, *COLUMNS[memory:]]


def _order(runs: list[Run]) -> list[tuple[str, str]]:
    """(arch, method) rows in first-seen order; `runs` comes in grid order or sorted with bp first."""
    return list(dict.fromkeys((a, m) for a, m, _ in runs))


def aggregate(
    runs_dir: Path | str,
    dataset: str,
    expected: list[Run] | None = None,
    allow_missing: bool = False,
    out_dir: Path | str | None = None,
    published_path: Path | str | None = PUBLISHED,
    published_as: str | None = None,
) -> pd.DataFrame:
    """The dataset's table, one row per (arch, method); written to out_dir/{dataset}_table.csv|md if given.

    `expected` lists the planned (arch, method, seed) runs (None: every record found). A planned run
    without a record raises FileNotFoundError naming the paths, unless `allow_missing`, when its row
    shows the missing count. delta_to_bp is the row's mean accuracy minus bp's on the same arch.
    `published_as` names the dataset whose published figures stand beside this one's (the CIFAR-10 JPEG
    image folder beside CIFAR-10's), default `dataset` itself; a named dataset without figures is refused.
    The published file is checked as a whole first (bench/report/published.py).
    """
    records, missing = collect(runs_dir, dataset, expected, allow_missing)
    runs = (
        list(expected)
        if expected is not None
        else sorted(records, key=lambda r: (r[0], r[1] != "bp", r[1], r[2]))
    )
    if not runs:
        raise FileNotFoundError(f"no records of {dataset} under {Path(runs_dir, dataset)}")
    notes = provenance_notes(list(records.values()), dataset)
    cited = (
        named(published_as, published_path) if published_as else published(dataset, published_path)
    )
    shown = shown_measures(list(records.values()))
    columns = table_columns(shown, any(r.memory.auxiliary is not None for r in records.values()))
    rows = []
    for arch, method in _order(runs):
        mine = [r for (a, m, _), r in records.items() if (a, m) == (arch, method)]
        n_missing = sum(1 for a, m, _ in missing if (a, m) == (arch, method))
        rows.append(
            _row(arch, method, mine, n_missing, shown)
            | {"published": shown_beside(cited, arch, method, mine)}
        )
    table = pd.DataFrame(rows, columns=columns)
    table[COUNTS] = (
        table[COUNTS].round().astype("Int64")
    )  # counts print as integers, <NA> when unknown
    bp = table[table["method"] == "bp"].set_index("arch")["test_acc_mean"]
    table["delta_to_bp"] = table["test_acc_mean"] - table["arch"].map(bp)
    table.attrs["notes"] = notes  # shown under the markdown table; the csv keeps its fixed columns
    if out_dir is not None:
        write_tables(table, dataset, out_dir)
    return table


def write_csv(table: pd.DataFrame, path: Path) -> None:
    """Every column of `table`, six significant digits, written atomically."""
    buffer = io.StringIO()
    table.to_csv(buffer, index=False, float_format="%.6g")
    write_atomic(path, buffer.getvalue().encode())


def write_tables(table: pd.DataFrame, dataset: str, out_dir: Path | str) -> tuple[Path, Path]:
    """Write {dataset}_table.csv (every column) and {dataset}_table.md (for reading) atomically."""
    out_dir = writable_folder(out_dir)
    csv_path, md_path = out_dir / f"{dataset}_table.csv", out_dir / f"{dataset}_table.md"
    write_csv(table, csv_path)
    write_atomic(md_path, markdown(table, dataset).encode())
    log.info("wrote %s and %s (%d rows)", csv_path, md_path, len(table))
    return csv_path, md_path


def _count(value) -> str:
    if value is None or pd.isna(value):
        return md.EMPTY
    return (
        f"{value / 1e6:.2f} M"
        if value >= 1e6
        else f"{value / 1e3:.1f} k"
        if value >= 1e3
        else f"{value:.0f}"
    )


MARKDOWN = [  # (header, cell from a table row)
    ("arch", lambda r: r.arch),
    ("method", lambda r: r.method),
    ("seeds ok/planned", lambda r: f"{r.n_ok}/{r.n_seeds}"),
    ("epochs", lambda r: r.epochs),
    (
        "epoch chosen",
        lambda r: {"last": "last", "best_val": "best val"}.get(
            r.selection, r.selection or md.EMPTY
        ),
    ),
    ("test acc (%)", lambda r: md.mean_std(r.test_acc_mean, r.test_acc_std)),
    ("Δ to BP (points)", lambda r: md.number(r.delta_to_bp, "{:+.2f}")),
    ("best acc (%)", lambda r: md.number(r.best_test_acc_mean)),
    ("update align.", lambda r: md.number(r.update_alignment, "{:.3f}")),
    ("ECE", lambda r: md.number(r.ece, "{:.3f}")),
    (f"PGD acc @{TABLE_BUDGET}/255 (%)", lambda r: md.number(r.pgd_acc)),
    ("trainable params", lambda r: _count(r.trainable_params)),
    ("feedback params", lambda r: _count(r.feedback_params)),
    ("inference params", lambda r: _count(r.inference_params)),
    (
        "params+grads+optim (MB)",
        lambda r: md.number(r.params_mb + r.grads_mb + r.optimizer_state_mb, "{:.1f}"),
    ),
    ("feedback (MB)", lambda r: md.number(r.feedback_mb, "{:.2f}")),
    ("saved activations (MB)", lambda r: md.number(r.saved_activations_mb, "{:.1f}")),
    ("peak in training (MB)", lambda r: md.number(r.peak_mb, "{:.0f}")),
    ("train time (s)", lambda r: md.number(r.train_time_s_mean, "{:.1f}")),
    ("images/s", lambda r: md.number(r.images_per_s_mean, "{:.0f}")),
    ("status", lambda r: r.status),
    ("published acc (%)", lambda r: r.published or md.EMPTY),
]


def _declared_cell(measure: Measure):
    return lambda r: md.number(getattr(r, measure.name), f"{{:.{measure.digits}f}}")


def _reported(measure: Measure) -> str:
    where = "at the epoch the table reports" if measure.when == "epoch" else "after training"
    blocks = ", mean over blocks" if measure.shape == "per_block" else ""
    return f"{where}{blocks} and seeds"


def markdown(table: pd.DataFrame, dataset: str) -> str:
    """The table as GitHub markdown: accuracy as mean ± std over the seeds that finished."""
    shown = [m for m in declare.declared().values() if m.column and m.name in table.columns]
    at = next(i for i, (header, _) in enumerate(MARKDOWN) if header.startswith("PGD")) + 1
    cells = [*MARKDOWN[:at], *((m.column, _declared_cell(m)) for m in shown), *MARKDOWN[at:]]
    if "auxiliary_mb" in table.columns:
        at = next(i for i, (header, _) in enumerate(cells) if header == "feedback (MB)") + 1
        cells.insert(at, ("auxiliary (MB)", lambda r: md.number(r.auxiliary_mb, "{:.2f}")))
    lines = [f"# {dataset}: test accuracy, mean ± std over seeds that finished", ""]
    lines += md.table(
        [h for h, _ in cells],
        [[cell(row) for _, cell in cells] for row in table.itertuples()],
    )
    lines += [
        "",
        "Memory in MB (10^6 bytes) per training step; peak in training is what the training steps "
        "allocated at most: CUDA's max_memory_allocated, or on CPU the growth of the resident set over "
        "a training epoch (records before this measure: the process's peak RSS); feedback is the rule's "
        "feedback tensors (fixed or learned), apart from the network's parameters. Δ to BP: mean accuracy minus bp's on the same arch. Update align.: the "
        "cosine between the rule's parameter update and the true BP gradient on a fixed probe batch, "
        "last epoch, mean over hidden layers (the head, trained by its true gradient in every local rule, "
        "left out) and seeds (1 for BP). ECE: expected calibration error (15 bins). PGD acc: test accuracy "
        f"under PGD at L-inf budget {TABLE_BUDGET}/255 on the fixed attacked subset (the record's robustness).",
    ]
    if "auxiliary_mb" in table.columns:
        lines[-1] += (
            " Auxiliary (MB): the rule's training-only modules (local heads, decoders): their "
            "parameters, gradients and optimizer state, apart from the network's."
        )
    if shown:  # the declared measures' own words (their column, then what it is)
        lines[-1] += "".join(f" {m.column}: {m.doc}, {_reported(m)}." for m in shown)
    for note in table.attrs.get("notes", []):
        lines += ["", f"**Warning:** {note}."]
    lines += [""]
    return "\n".join(lines)
