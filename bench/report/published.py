"""The cited figures beside the tables (config/published.csv): read, checked as a whole, joined by name,
and the ones a table row shows (like with like: the row's optimizer).

One row is one figure a paper or repository published: `dataset,arch,method,metric,value,source` and an
optional `optimizer`. The file is validated like a config file before any figure is shown: its columns,
each value's type and range (a percentage in 0-100, finite; a known metric and optimizer), a source on
every row, and no figure given twice (the same dataset, arch, method, optimizer and source); an error
names the file, the line and what is accepted, and no table is written.
"""

from __future__ import annotations

import csv
import io
import math
import re
from pathlib import Path

from bench.layout import PUBLISHED  # one cited figure a row

REQUIRED = ("dataset", "arch", "method", "metric", "value", "source")
OPTIONAL = ("optimizer",)  # "" or absent: the source names no optimizer; compared with every run
METRICS = {  # metric -> accuracy (%) from its value (%)
    "test_acc": lambda value: value,
    "top1_error": lambda value: 100.0 - value,
}
OPTIMIZERS = (
    "sgd",
    "adam",
    "adamw",
)  # the recipe's optimizer choices (bench/config/recipe.py RECIPE)
NAME = re.compile(
    r"[A-Za-z0-9][A-Za-z0-9_.-]*"
)  # as the run folders spell names; others never join
MAX_BYTES = 4 * 2**20  # the real file is a few KB

Published = dict[
    tuple[str, str], list[tuple[str, str]]
]  # (arch, method) -> [(optimizer or "", "acc [source]")]


def read(path: Path | str) -> list[dict[str, str]]:
    """Every row of the published file at `path`, checked, each with its `line`; ValueError names the fault."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"published figures {path}: not a regular file; give a CSV file")
    try:
        with path.open("rb") as file:
            raw = file.read(MAX_BYTES + 1)
        if len(raw) > MAX_BYTES:
            raise ValueError(f"published figures {path}: over {MAX_BYTES // 2**20} MiB")
        text = raw.decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"published figures {path}: not readable as UTF-8 text: {error}") from None
    try:
        reader = csv.reader(io.StringIO(text, newline=""), strict=True)
        header = next(reader, [])
        _check_header(path, header)
        rows = []
        for fields in reader:
            if not fields:
                continue  # a blank line
            where = f"{path} line {reader.line_num}"
            if len(fields) != len(header):
                raise ValueError(
                    f"{where}: {len(fields)} fields; accepted: {len(header)}, one per column "
                    f"({','.join(header)}); quote a value that holds a comma"
                )
            rows.append(_checked(dict(zip(header, fields)), where) | {"line": reader.line_num})
    except csv.Error as error:
        raise ValueError(f"published figures {path} line {reader.line_num}: {error}") from None
    _check_duplicates(path, rows)
    return rows


def _check_header(path: Path, header: list[str]) -> None:
    accepted = f"accepted columns: {', '.join(REQUIRED)} and optionally {', '.join(OPTIONAL)}"
    missing = [column for column in REQUIRED if column not in header]
    if missing:
        raise ValueError(f"{path} line 1: missing column(s) {', '.join(missing)}; {accepted}")
    unknown = [column for column in header if column not in REQUIRED + OPTIONAL]
    twice = sorted({column for column in header if header.count(column) > 1})
    if unknown or twice:
        bad = f"unknown column {unknown[0]!r}" if unknown else f"column {twice[0]!r} twice"
        raise ValueError(f"{path} line 1: {bad}; {accepted}, each once")


def _checked(row: dict[str, str], where: str) -> dict:
    """`row` with its value as a float and the optimizer filled in, or a ValueError at `where`."""
    for key in ("dataset", "arch", "method"):
        if not NAME.fullmatch(row[key]):
            raise ValueError(
                f"{where}: bad value {row[key]!r} for {key!r}; accepted: a name as the suite spells "
                "it (letters, digits, '_', '.', '-', starting with a letter or digit)"
            )
    figure = f"{row['dataset']}/{row['arch']}/{row['method']}"
    if row["metric"] not in METRICS:
        raise ValueError(
            f"{where}: bad value {row['metric']!r} for 'metric' ({figure}); "
            f"accepted: {', '.join(METRICS)} (both in %)"
        )
    try:
        value = float(row["value"])
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and 0.0 <= value <= 100.0):
        raise ValueError(
            f"{where}: bad value {row['value']!r} for 'value' ({figure}); "
            "accepted: a finite percentage from 0 to 100"
        )
    optimizer = row.get("optimizer", "")
    if optimizer not in ("", *OPTIMIZERS):
        raise ValueError(
            f"{where}: bad value {optimizer!r} for 'optimizer' ({figure}); accepted: "
            f"{', '.join(OPTIMIZERS)}, or empty when the source names none"
        )
    if not row["source"].strip():
        raise ValueError(f"{where}: no 'source' for {figure}; every figure names where it is from")
    return row | {"value": value, "optimizer": optimizer}


def _check_duplicates(path: Path, rows: list[dict]) -> None:
    seen: dict[tuple, int] = {}
    for row in rows:
        key = tuple(row[k] for k in ("dataset", "arch", "method", "optimizer", "source"))
        if key in seen:
            raise ValueError(
                f"{path} line {row['line']}: the figure of line {seen[key]} again (dataset, arch, "
                f"method, optimizer and source {', '.join(map(repr, key))}); accepted: each figure once"
            )
        seen[key] = row["line"]


def published(dataset: str, path: Path | str | None = PUBLISHED) -> Published:
    """Published accuracies (%) of `dataset` by (arch, method), each with its optimizer ("" when the source
    names none) and its source, from the cited data file (config/published.csv) if present; the whole
    file is checked first (`read`)."""
    if path is None or not Path(path).exists():
        return {}
    figures: Published = {}
    for row in read(path):
        if row["dataset"] == dataset:
            acc = METRICS[row["metric"]](row["value"])
            figures.setdefault((row["arch"], row["method"]), []).append(
                (row["optimizer"], f"{acc:.2f} [{row['source']}]")
            )
    return figures


def named(dataset: str, path: Path | str | None = PUBLISHED) -> Published:
    """The figures of `dataset`, named on purpose (`--published-as`, the grid's `published_as`): a
    dataset with no figure in the file is refused, naming those that have some."""
    figures = published(dataset, path)
    if figures:
        return figures
    if path is None or not Path(path).exists():
        raise ValueError(
            f"published_as {dataset!r}: there are no published figures ({path} not found)"
        )
    known = sorted({row["dataset"] for row in read(path)})
    raise ValueError(
        f"published_as {dataset!r} (--published-as): {path} has no figure of that dataset; "
        f"accepted: {', '.join(known) or 'none'}"
    )


def like_with_like(figures: list[tuple[str, str]], records: list) -> str:
    """The published figures a row compares with: those with the row's optimizer, or with none stated.

    Like with like: a BioTorch Adam figure sits beside runs trained with Adam, never beside AdamW or SGD
    runs. A row without records (every run missing) shows every figure.
    """
    used = {r.recipe.get("optimizer") for r in records} - {None}
    return "; ".join(
        text for optimizer, text in figures if not optimizer or not used or optimizer in used
    )
