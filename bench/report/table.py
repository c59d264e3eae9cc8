"""Tables: one dataset's run records -> one row per (arch, method variant) in {dataset}_table.csv and .md.

Accuracy is the mean +- sample std over the seeds that finished (`status: ok`), each at the epoch its
record selects (`selection`: the last, or the best on a validation split: BioTorch's protocol); a diverged run is left
out of the mean and counted in `status`; a planned run without a record is counted as missing. Params
and memory are means over every record found (they do not depend on divergence); memory is in MB
(10^6 bytes), as measured by the trainer (bench/measure.py).
"""
from __future__ import annotations

import io
import json
import logging
import math
from collections import Counter
from pathlib import Path

import pandas as pd

from bench.config import REPO
from bench.record import SCHEMA_VERSION, writable_folder, write_atomic
from bench.robustness import ATTACKS, TABLE_BUDGET

log = logging.getLogger("bench.aggregate")

PUBLISHED = REPO / "config" / "published.csv"  # dataset,arch,method,metric,value,source (one cited figure a row)
MB = 1e6
MEMORY = {"params_mb": "params", "grads_mb": "grads", "optimizer_state_mb": "optimizer_state",
          "feedback_mb": "feedback", "saved_activations_mb": "saved_activations", "peak_mb": "peak"}
COUNTS = ["trainable_params", "trainable_params_initial", "feedback_params", "inference_params"]
COLUMNS = ["arch", "method", "n_seeds", "n_ok", "n_diverged", "n_missing", "epochs", "selection", "test_acc_mean",
           "test_acc_std", "delta_to_bp", "best_test_acc_mean", "update_alignment", "ece", "pgd_acc", *COUNTS, *MEMORY, "train_time_s_mean",
           "images_per_s_mean", "status", "published"]
Run = tuple[str, str, int]  # (arch, method, seed)


def read_record(path: Path) -> dict:
    """One record.json, checked for the schema version and the fields a table needs."""
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not a readable record.json ({error})") from None
    if record.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(f"{path}: schema_version {record.get('schema_version')!r}; accepted: {SCHEMA_VERSION}")
    for key in ("dataset", "arch", "method", "seed", "status", "test_acc", "memory", "history"):
        if key not in record:
            raise ValueError(f"{path}: record has no {key!r}")
    check_record(record, path)
    return record


STATUSES = ("ok", "diverged")
PERCENTAGES = ("test_acc", "test_top5", "best_test_acc", "selected_test_acc", "best_val_acc")


def check_record(record: dict, path: Path | str) -> None:
    """Refuse a record whose values cannot come from the trainer (a hand-edited or foreign file), naming
    the file and the key: a table must never average NaN, 150 % or `true` into a result."""
    def bad(key: str, accepted: str) -> ValueError:
        return ValueError(f"{path}: bad value {record.get(key)!r} for {key!r}; accepted: {accepted}")

    def is_number(value) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

    for key in ("dataset", "arch", "method"):
        if not isinstance(record[key], str) or not record[key]:
            raise bad(key, "a non-empty string")
    if not isinstance(record["seed"], int) or isinstance(record["seed"], bool) or record["seed"] < 0:
        raise bad("seed", "an integer >= 0")
    if record["status"] not in STATUSES:
        raise bad("status", f"one of {', '.join(STATUSES)}")
    for key in PERCENTAGES:
        value = record.get(key)
        if value is not None and not (is_number(value) and 0 <= value <= 100):
            raise bad(key, "null or a number from 0 to 100")
    if record["status"] == "ok" and record["test_acc"] is None and record.get("history"):
        raise bad("test_acc", "a number from 0 to 100 for a finished run (status ok)")
    for key in ("epochs", "epochs_planned", *COUNTS):
        value = record.get(key)
        if value is not None and not (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
            raise bad(key, "null or an integer >= 0")
    for key in ("train_time_s", "images_per_s"):
        value = record.get(key)
        if value is not None and not (is_number(value) and value >= 0):
            raise bad(key, "null or a finite number >= 0")
    if not isinstance(record["history"], list) or not all(isinstance(h, dict) for h in record["history"]):
        raise bad("history", "a list of per-epoch objects")
    ece = record.get("ece")
    if ece is not None and not (is_number(ece) and 0 <= ece <= 1):
        raise bad("ece", "null or a number from 0 to 1")
    check_robustness(record.get("robustness"), path)
    if not isinstance(record["memory"], dict):
        raise bad("memory", "an object of byte counts")
    for key, value in record["memory"].items():
        if key not in ("peak_kind", "device") and value is not None and not (is_number(value) and value >= 0):
            raise ValueError(f"{path}: bad value {value!r} for 'memory.{key}'; accepted: null or a byte count >= 0")


def check_robustness(entry, path: Path | str) -> None:
    """A record's `robustness`: null (not measured, or a record before issue 21), or accuracies in %."""
    if entry is None:
        return
    if not isinstance(entry, dict) or not all(isinstance(entry.get(k), dict) for k in ATTACKS):
        raise ValueError(f"{path}: bad value for 'robustness'; accepted: null or an object with "
                         f"{' and '.join(ATTACKS)} accuracies by budget")
    rule = entry.get("rule_gradient")  # optional: the attacks through the rule's own backward
    if rule is not None and not (isinstance(rule, dict) and all(isinstance(rule.get(k), dict) for k in ATTACKS)):
        raise ValueError(f"{path}: bad value for 'robustness.rule_gradient'; accepted: null or an object with "
                         f"{' and '.join(ATTACKS)} accuracies by budget")
    values = {"clean_acc": entry.get("clean_acc")}
    for prefix, part in (("", entry), ("rule_gradient.", rule or {})):
        values |= {f"{prefix}{kind}.{budget}": acc for kind in ATTACKS for budget, acc in part.get(kind, {}).items()}
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 100:
            raise ValueError(f"{path}: bad value {value!r} for 'robustness.{key}'; accepted: a number from 0 to 100")


def robust_acc(record: dict, kind: str = "pgd", budget: str = TABLE_BUDGET) -> float | None:
    """The record's accuracy (%) under attack `kind` at `budget` (1/255 units), None where not measured."""
    return ((record.get("robustness") or {}).get(kind) or {}).get(budget)


def find_records(runs_dir: Path | str, dataset: str) -> dict[Run, dict]:
    """Every record under runs_dir/dataset/{arch}/{method}/seed{seed}/, keyed by (arch, method, seed)."""
    found = {}
    for path in sorted(Path(runs_dir, dataset).glob("*/*/seed*/record.json")):
        record = read_record(path)
        arch, method, seed_dir = path.parts[-4:-1]
        key = (record["arch"], record["method"], record["seed"])
        if (record["dataset"], *key) != (dataset, arch, method, int(seed_dir.removeprefix("seed") or -1)):
            raise ValueError(f"{path}: record is for {record['dataset']}/{'/'.join(map(str, key))}, "
                             "not the run its folder names")
        found[key] = record
    return found


def collect(runs_dir: Path | str, dataset: str, expected: list[Run] | None = None,
            allow_missing: bool = False) -> tuple[dict[Run, dict], list[Run]]:
    """(records by run, missing runs). With `expected`, only planned runs count; a missing one is an error
    naming the record paths unless `allow_missing`."""
    found = find_records(runs_dir, dataset)
    if expected is None:
        return found, []
    expected = [(a, m, int(s)) for a, m, s in expected]
    extra = len(set(found) - set(expected))
    if extra:
        log.info("%s: %d record(s) outside the planned grid are not in the table", dataset, extra)
    missing = [run for run in expected if run not in found]
    if missing and not allow_missing:
        paths = [str(Path(runs_dir, dataset, a, m, f"seed{s}", "record.json")) for a, m, s in missing]
        more = f" and {len(paths) - 10} more" if len(paths) > 10 else ""
        raise FileNotFoundError(f"{len(missing)} planned run(s) of {dataset} have no record: "
                                f"{', '.join(paths[:10])}{more}; run them, or pass --allow-missing")
    return {run: found[run] for run in expected if run in found}, missing


def mean_defined(values: list) -> float:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else math.nan


def sample_std(values: list) -> float:
    """Sample standard deviation (n - 1); NaN for fewer than two values."""
    if len(values) < 2:
        return math.nan
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def _row(arch: str, method: str, records: list[dict], n_missing: int) -> dict:
    ok = [r for r in records if r["status"] == "ok"]
    accs = [acc for acc in map(reported_acc, ok) if acc is not None]
    n_seeds, n_diverged = len(records) + n_missing, len(records) - len(ok)
    status = [f"diverged {n_diverged}/{n_seeds}"] if n_diverged else []
    status += [f"missing {n_missing}/{n_seeds}"] if n_missing else []
    epochs = sorted({r.get("epochs_planned") for r in records} - {None})
    row = {"arch": arch, "method": method, "n_seeds": n_seeds, "n_ok": len(ok), "n_diverged": n_diverged,
           "n_missing": n_missing, "epochs": "/".join(map(str, epochs)),
           "selection": "/".join(sorted({r.get("selection", "last") for r in ok})),
           "test_acc_mean": mean_defined(accs), "test_acc_std": sample_std(accs),
           "best_test_acc_mean": mean_defined([r.get("best_test_acc") for r in ok]),
           "update_alignment": mean_defined([final_update_alignment(r) for r in ok]),
           "ece": mean_defined([r.get("ece") for r in ok]),  # records before issue 21 have none: empty
           "pgd_acc": mean_defined([robust_acc(r) for r in ok])}
    row |= {key: mean_defined([r.get(key) for r in records]) for key in COUNTS}
    row |= {col: mean_defined([r["memory"].get(key) for r in records]) / MB for col, key in MEMORY.items()}
    row |= {"train_time_s_mean": mean_defined([r.get("train_time_s") for r in ok]),
            "images_per_s_mean": mean_defined([r.get("images_per_s") for r in ok]),
            "status": ", ".join(status) or "ok"}
    return row


def reported_acc(record: dict) -> float | None:
    """The test accuracy a table reports: at the record's selected epoch (the best on validation where the run
    held a validation split, `selection: best_val`), else at the last epoch."""
    return record.get("selected_test_acc", record["test_acc"])


def final_update_alignment(record: dict) -> float | None:
    """The last epoch's update alignment, mean over the hidden layers where it is defined (None: not measured).

    Per layer it is the cosine between the rule's parameter update and the true BP gradient on the probe
    batch (bench/measure.py update_alignment): 1 for BP, below 1 for any rule that departs from it. The
    head is left out: every local rule trains it with its true gradient, so its 1 would lift them all.
    """
    return mean_update_alignment(record["history"][-1]) if record.get("history") else None


def mean_update_alignment(entry: dict) -> float | None:
    """One history entry's update alignment, mean over its hidden layers (not the head) where defined."""
    layers = entry.get("update_alignment") or {}
    defined = [v for name, v in layers.items()
               if name != "head" and not name.startswith("head.") and v is not None and math.isfinite(v)]
    return sum(defined) / len(defined) if defined else None


def _order(runs: list[Run]) -> list[tuple[str, str]]:
    """(arch, method) rows in first-seen order; `runs` comes in grid order or sorted with bp first."""
    return list(dict.fromkeys((a, m) for a, m, _ in runs))


Published = dict[tuple[str, str], list[tuple[str, str]]]  # (arch, method) -> [(optimizer or "", "acc [source]")]


def published(dataset: str, path: Path | str | None = PUBLISHED) -> Published:
    """Published accuracies (%) of `dataset` by (arch, method), each with its optimizer ("" when the source
    names none) and its source, from the cited data file (config/published.csv) if present."""
    if path is None or not Path(path).is_file():
        return {}
    table = pd.read_csv(path, dtype={"value": float, "optimizer": str}, keep_default_na=False)
    missing = {"dataset", "arch", "method", "metric", "value", "source"} - set(table.columns)
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
    if "optimizer" not in table.columns:  # optional: a file without it compares every figure with every run
        table["optimizer"] = ""
    figures: Published = {}
    for row in table[table["dataset"] == dataset].itertuples():
        if row.metric not in ("test_acc", "top1_error"):
            continue  # other metrics (time, memory) have no column of their own yet
        acc = row.value if row.metric == "test_acc" else 100.0 - row.value
        figures.setdefault((row.arch, row.method), []).append((row.optimizer, f"{acc:.2f} [{row.source}]"))
    return figures


def like_with_like(figures: list[tuple[str, str]], records: list[dict]) -> str:
    """The published figures a row compares with: those with the row's optimizer, or with none stated.

    Like with like: a BioTorch Adam figure sits beside runs trained with Adam, never beside AdamW or SGD
    runs. A row without records (every run missing) shows every figure.
    """
    used = {(r.get("recipe") or {}).get("optimizer") for r in records} - {None}
    return "; ".join(text for optimizer, text in figures if not optimizer or not used or optimizer in used)


def provenance_notes(records: list[dict], dataset: str) -> list[str]:
    """Warnings (also logged) when the records come from several git commits or from uncommitted code."""
    notes = []
    sources = [r.get("provenance") or {} for r in records]
    commits = Counter(str(p.get("git_commit") or "unknown") for p in sources)
    if len(commits) > 1:
        listed = ", ".join(f"{c[:10]} ({n} runs)" for c, n in commits.most_common())
        notes.append(f"the rows mix records from {len(commits)} git commits: {listed}")
    dirty = sum(1 for p in sources if p.get("git_dirty"))
    if dirty:
        notes.append(f"{dirty} of {len(records)} runs ran on a working tree with uncommitted changes (git_dirty)")
    for note in notes:
        log.warning("%s: %s", dataset, note)
    return notes


def aggregate(runs_dir: Path | str, dataset: str, expected: list[Run] | None = None, allow_missing: bool = False,
              out_dir: Path | str | None = None, published_path: Path | str | None = PUBLISHED,
              published_as: str | None = None) -> pd.DataFrame:
    """The dataset's table, one row per (arch, method); written to out_dir/{dataset}_table.csv|md if given.

    `expected` lists the planned (arch, method, seed) runs (None: every record found). A planned run
    without a record raises FileNotFoundError naming the paths, unless `allow_missing`, when its row
    shows the missing count. delta_to_bp is the row's mean accuracy minus bp's on the same arch.
    `published_as` names the dataset whose published figures stand beside this one's (the CIFAR-10 JPEG
    image folder beside CIFAR-10's), default `dataset` itself.
    """
    records, missing = collect(runs_dir, dataset, expected, allow_missing)
    runs = list(expected) if expected is not None else sorted(records, key=lambda r: (r[0], r[1] != "bp", r[1], r[2]))
    if not runs:
        raise FileNotFoundError(f"no records of {dataset} under {Path(runs_dir, dataset)}")
    notes = provenance_notes(list(records.values()), dataset)
    cited = published(published_as or dataset, published_path)
    rows = []
    for arch, method in _order(runs):
        mine = [r for (a, m, _), r in records.items() if (a, m) == (arch, method)]
        n_missing = sum(1 for a, m, _ in missing if (a, m) == (arch, method))
        rows.append(_row(arch, method, mine, n_missing) | {"published": like_with_like(cited.get((arch, method), []), mine)})
    table = pd.DataFrame(rows, columns=COLUMNS)
    table[COUNTS] = table[COUNTS].round().astype("Int64")  # counts print as integers, <NA> when unknown
    bp = table[table["method"] == "bp"].set_index("arch")["test_acc_mean"]
    table["delta_to_bp"] = table["test_acc_mean"] - table["arch"].map(bp)
    table.attrs["notes"] = notes  # shown under the markdown table; the csv keeps its fixed columns
    if out_dir is not None:
        write_tables(table, dataset, out_dir)
    return table


def write_tables(table: pd.DataFrame, dataset: str, out_dir: Path | str) -> tuple[Path, Path]:
    """Write {dataset}_table.csv (every column) and {dataset}_table.md (for reading) atomically."""
    out_dir = writable_folder(out_dir)
    csv_path, md_path = out_dir / f"{dataset}_table.csv", out_dir / f"{dataset}_table.md"
    buffer = io.StringIO()
    table.to_csv(buffer, index=False, float_format="%.6g")
    write_atomic(csv_path, buffer.getvalue().encode())
    write_atomic(md_path, markdown(table, dataset).encode())
    log.info("wrote %s and %s (%d rows)", csv_path, md_path, len(table))
    return csv_path, md_path


def _num(value: float, fmt: str = "{:.2f}") -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else fmt.format(value)


def _count(value) -> str:
    if value is None or pd.isna(value):
        return "—"
    return f"{value / 1e6:.2f} M" if value >= 1e6 else f"{value / 1e3:.1f} k" if value >= 1e3 else f"{value:.0f}"


def _accuracy(row) -> str:
    if math.isnan(row.test_acc_mean):
        return "—"
    return f"{row.test_acc_mean:.2f}" + ("" if math.isnan(row.test_acc_std) else f" ± {row.test_acc_std:.2f}")


MARKDOWN = [  # (header, cell from a table row)
    ("arch", lambda r: r.arch),
    ("method", lambda r: r.method),
    ("seeds ok/planned", lambda r: f"{r.n_ok}/{r.n_seeds}"),
    ("epochs", lambda r: r.epochs),
    ("epoch chosen", lambda r: {"last": "last", "best_val": "best val"}.get(r.selection, r.selection or "—")),
    ("test acc (%)", _accuracy),
    ("Δ to BP (points)", lambda r: _num(r.delta_to_bp, "{:+.2f}")),
    ("best acc (%)", lambda r: _num(r.best_test_acc_mean)),
    ("update align.", lambda r: _num(r.update_alignment, "{:.3f}")),
    ("ECE", lambda r: _num(r.ece, "{:.3f}")),
    (f"PGD acc @{TABLE_BUDGET}/255 (%)", lambda r: _num(r.pgd_acc)),
    ("trainable params", lambda r: _count(r.trainable_params)),
    ("feedback params", lambda r: _count(r.feedback_params)),
    ("inference params", lambda r: _count(r.inference_params)),
    ("params+grads+optim (MB)", lambda r: _num(r.params_mb + r.grads_mb + r.optimizer_state_mb, "{:.1f}")),
    ("feedback (MB)", lambda r: _num(r.feedback_mb, "{:.2f}")),
    ("saved activations (MB)", lambda r: _num(r.saved_activations_mb, "{:.1f}")),
    ("peak in training (MB)", lambda r: _num(r.peak_mb, "{:.0f}")),
    ("train time (s)", lambda r: _num(r.train_time_s_mean, "{:.1f}")),
    ("images/s", lambda r: _num(r.images_per_s_mean, "{:.0f}")),
    ("status", lambda r: r.status),
    ("published acc (%)", lambda r: r.published or "—"),
]


def markdown(table: pd.DataFrame, dataset: str) -> str:
    """The table as GitHub markdown: accuracy as mean ± std over the seeds that finished."""
    lines = [f"# {dataset}: test accuracy, mean ± std over seeds that finished", "",
             "| " + " | ".join(h for h, _ in MARKDOWN) + " |", "|" + "---|" * len(MARKDOWN)]
    lines += ["| " + " | ".join(str(cell(row)) for _, cell in MARKDOWN) + " |" for row in table.itertuples()]
    lines += ["", "Memory in MB (10^6 bytes) per training step; peak in training is what the training steps "
              "allocated at most: CUDA's max_memory_allocated, or on CPU the growth of the resident set over "
              "a training epoch (records before this measure: the process's peak RSS); feedback is the rule's feedback tensors (fixed or learned), apart from the "
              "network's parameters. Δ to BP: mean accuracy minus bp's on the same arch. Update align.: the "
              "cosine between the rule's parameter update and the true BP gradient on a fixed probe batch, "
              "last epoch, mean over hidden layers (the head, trained by its true gradient in every local rule, "
              "left out) and seeds (1 for BP). ECE: expected calibration error (15 bins). PGD acc: test accuracy "
              f"under PGD at L-inf budget {TABLE_BUDGET}/255 on the fixed attacked subset (the record's robustness)."]
    for note in table.attrs.get("notes", []):
        lines += ["", f"**Warning:** {note}."]
    lines += [""]
    return "\n".join(lines)
