"""The cited figures beside the tables (config/published.csv): read, checked as a whole, joined by name,
and the ones a table row shows (like with like: the row's optimizer and its number of modules K).

One row is one figure a paper or repository published: `dataset,arch,method,metric,value,source` and the
optional columns `optimizer`, `modules` (K, the gradient-isolated modules the figure was trained with),
`epochs` (the recipe's, as the source states it), `provenance` (`primary`: read from the authors' own
table or code; `secondary`: quoted by a later paper, named in `quoted_in`). A file without an optional
column is read with that column empty on every row (the BioTorch-only file of issue 26 stays valid). The
file is validated like a config file before any figure is shown: its columns, each value's type and range
(a percentage in 0-100, finite; a known metric, optimizer and provenance; K and epochs positive integers),
a source on every row, and no figure given twice (the same dataset, arch, method, optimizer, K and
source); an error names the file, the line, the column and what is accepted, and no table is written.
"""

from __future__ import annotations

import csv
import io
import math
import re
from pathlib import Path
from typing import NamedTuple

from bench.config.recipe import RECIPE
from bench.layout import PUBLISHED  # one cited figure a row

REQUIRED = ("dataset", "arch", "method", "metric", "value", "source")
OPTIONAL = (
    "optimizer",  # "" or absent: the source names no optimizer; compared with every run
    "modules",  # "" or absent: no K (end to end, or one module per block); else shown beside runs of K
    "epochs",  # "" or absent: the source states none
    "provenance",  # one of PROVENANCES on every row of a file that has the column
    "quoted_in",  # the later paper that quotes a secondary figure; empty for a primary one
)
PROVENANCES = ("primary", "secondary")
METRICS = {  # metric -> accuracy (%) from its value (%)
    "test_acc": lambda value: value,
    "top1_error": lambda value: 100.0 - value,
}
# the recipe's optimizers, so a new optimizer's figures join with no edit here
OPTIMIZERS = RECIPE["optimizer"].choices
NAME = re.compile(
    r"[A-Za-z0-9][A-Za-z0-9_.-]*"
)  # as the run folders spell names; others never join
MAX_BYTES = 4 * 2**20  # the real file is a few KB

K_VARIANT = re.compile(
    r"(.+)-k([1-9][0-9]*)"
)  # a variant of the K axis: dgl-k4 is dgl at modules 4


class Figure(NamedTuple):
    """One published figure as a table row shows it."""

    optimizer: str  # "" when the source names none
    text: str  # "acc [source]", with K and the quoting paper where the row has them
    modules: int | None = None  # K, or None when the figure has none


Published = dict[tuple[str, str], list[Figure]]  # (arch, method) -> its figures


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
    counts = {key: _count(row.get(key, ""), key, where, figure) for key in ("modules", "epochs")}
    return row | {
        "value": value,
        "optimizer": optimizer,
        **counts,
        **_provenance(row, where, figure),
    }


def _count(text: str, key: str, where: str, figure: str) -> int | None:
    """A positive integer column (`modules`, `epochs`): None when empty."""
    if text == "":
        return None
    if not re.fullmatch(r"[1-9][0-9]{0,5}", text):
        raise ValueError(
            f"{where}: bad value {text!r} for {key!r} ({figure}); accepted: a positive integer "
            "written in digits, or empty when the source states none"
        )
    return int(text)


def _provenance(row: dict[str, str], where: str, figure: str) -> dict[str, str]:
    """`provenance` and `quoted_in` checked together: a secondary figure names the paper quoting it."""
    provenance, quoted_in = row.get("provenance"), row.get("quoted_in", "")
    if provenance is None:  # a file from before the column: nothing is claimed
        provenance = ""
    elif provenance not in PROVENANCES:
        raise ValueError(
            f"{where}: bad value {provenance!r} for 'provenance' ({figure}); accepted: primary (read "
            "from the authors' own table or code) or secondary (quoted by a later paper, in quoted_in)"
        )
    if provenance == "secondary" and not quoted_in.strip():
        raise ValueError(
            f"{where}: no 'quoted_in' for the secondary figure {figure}; accepted: the later paper "
            "that quotes it"
        )
    if quoted_in and provenance != "secondary":
        raise ValueError(
            f"{where}: bad value {quoted_in!r} for 'quoted_in' ({figure}, provenance "
            f"{provenance or 'not given'!r}); accepted: empty unless the provenance is secondary"
        )
    return {"provenance": provenance, "quoted_in": quoted_in}


def _check_duplicates(path: Path, rows: list[dict]) -> None:
    seen: dict[tuple, int] = {}
    for row in rows:
        key = tuple(row[k] for k in ("dataset", "arch", "method", "optimizer", "modules", "source"))
        if key in seen:
            raise ValueError(
                f"{path} line {row['line']}: the figure of line {seen[key]} again (dataset, arch, "
                f"method, optimizer, modules and source {', '.join(map(repr, key))}); accepted: each "
                "figure once"
            )
        seen[key] = row["line"]


def published(dataset: str, path: Path | str | None = PUBLISHED) -> Published:
    """Published accuracies (%) of `dataset` by (arch, method), each with its optimizer ("" when the source
    names none), its K (None when it has none) and its source, from the cited data file
    (config/published.csv) if present; the whole file is checked first (`read`)."""
    if path is None or not Path(path).exists():
        return {}
    figures: Published = {}
    for row in read(path):
        if row["dataset"] == dataset:
            acc = METRICS[row["metric"]](row["value"])
            k = f" K={row['modules']}" if row["modules"] else ""
            quoted = f"; quoted in {row['quoted_in']}" if row["quoted_in"] else ""
            figures.setdefault((row["arch"], row["method"]), []).append(
                Figure(row["optimizer"], f"{acc:.2f}{k} [{row['source']}{quoted}]", row["modules"])
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


def run_modules(record) -> int | None:
    """The K a run trained with: its `modules` option, else one module per block (the default of
    every module-wise rule), None when the record holds neither."""
    k = record.options.get("modules")
    if isinstance(k, int) and not isinstance(k, bool) and k > 0:
        return k
    return record.blocks


def like_with_like(figures: list[Figure], records: list) -> str:
    """The published figures a row compares with: those with the row's optimizer, or with none stated,
    and those of the row's K, or with none.

    Like with like: a BioTorch Adam figure sits beside runs trained with Adam, never beside AdamW or SGD
    runs; InfoPro's K = 2 figure beside runs of 2 modules only (every run of the row: a row mixing K, or
    of runs whose K is unknown, shows no K figure). A row without records (every run missing) shows
    every figure.
    """
    used = {r.recipe.get("optimizer") for r in records} - {None}
    ks = {run_modules(r) for r in records}
    k = next(iter(ks)) if len(ks) == 1 else None
    return "; ".join(
        f.text
        for f in figures
        if (not f.optimizer or not used or f.optimizer in used)
        and (f.modules is None or not records or f.modules == k)
    )


def shown_beside(cited: Published, arch: str, method: str, records: list) -> str:
    """The figures the table row (arch, method) shows: those named `method`, and for a variant of the K
    axis named `{rule}-k{K}` (dgl-k4) the rule's figures at that K; then like with like."""
    figures = list(cited.get((arch, method), []))
    axis = K_VARIANT.fullmatch(method)
    if axis:
        rule, k = axis.group(1), int(axis.group(2))
        figures += [f for f in cited.get((arch, rule), []) if f.modules == k]
    return like_with_like(figures, records)
