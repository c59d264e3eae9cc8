"""config/published.csv, the cited figures beside the tables: well-formed, and BioTorch's tables complete."""

import csv
import math
from collections import Counter
from pathlib import Path

import pytest

PUBLISHED = Path(__file__).resolve().parent.parent / "config" / "published.csv"
COLUMNS = ["dataset", "arch", "method", "metric", "value", "source", "optimizer"]
COLUMNS += ["modules", "epochs", "provenance", "quoted_in"]  # issue 28: K, the recipe, where read
METRICS = ("test_acc", "top1_error")  # percentages
OPTIMIZERS = ("sgd", "adam", "")  # empty: the source compares no optimizers
RULES = ["bp", "fa", "dfa", "usf", "brsf", "frsf"]  # BioTorch's six, in the suite's spelling


def _rows() -> list[dict[str, str]]:
    with open(PUBLISHED, newline="") as f:
        return list(csv.DictReader(f))


def _biotorch(dataset: str) -> list[dict[str, str]]:
    return [r for r in _rows() if r["dataset"] == dataset and r["source"].startswith("BioTorch")]


def test_published_has_the_columns_in_order():
    with open(PUBLISHED, newline="") as f:
        header, *rows = list(csv.reader(f))
    assert header == COLUMNS
    assert rows and all(len(row) == len(COLUMNS) for row in rows)


@pytest.mark.parametrize(
    "row", _rows(), ids=lambda r: f"{r['dataset']}-{r['arch']}-{r['method']}-{r['value']}"
)
def test_every_row_is_a_cited_percentage(row):
    value = float(row["value"])
    assert math.isfinite(value) and 0.0 <= value <= 100.0
    assert row["metric"] in METRICS and row["optimizer"] in OPTIMIZERS
    assert row["source"].strip() and all(row[key].strip() for key in ("dataset", "arch", "method"))
    assert row["method"] == row["method"].lower() and row["arch"] == row["arch"].lower()


def test_no_figure_is_given_twice():
    keys = Counter(
        (r["dataset"], r["arch"], r["method"], r["metric"], r["optimizer"], r["source"])
        for r in _rows()
    )
    assert [key for key, n in keys.items() if n > 1] == []


def test_biotorch_cifar10_table_is_complete_and_names_its_optimizer():
    rows = _biotorch("cifar10")
    cells = Counter((r["arch"], r["method"], r["optimizer"]) for r in rows)
    expected = {
        (arch, rule, opt)
        for arch in ("lenet", "resnet20", "resnet56")
        for rule in RULES
        for opt in ("sgd", "adam")
    }
    assert len(rows) == 36 and set(cells) == expected and set(cells.values()) == {1}
    for r in rows:
        assert r["metric"] == "top1_error"
        assert {"sgd": "SGD", "adam": "Adam"}[r["optimizer"]] in r["source"]
        assert "arXiv 2108.13446" in r["source"] and "Benchmarks.md" in r["source"]


def test_biotorch_cifar10_figures_are_its_table():
    # Spot checks against Benchmarks.md (one per rule), and BP beating DFA in every column.
    value = {
        (r["arch"], r["method"], r["optimizer"]): float(r["value"]) for r in _biotorch("cifar10")
    }
    assert value["lenet", "bp", "sgd"] == 14.23 and value["lenet", "fa", "adam"] == 40.67
    assert value["resnet20", "dfa", "sgd"] == 45.94 and value["resnet20", "usf", "adam"] == 10.59
    assert value["resnet56", "brsf", "sgd"] == 8.69 and value["resnet56", "frsf", "adam"] == 10.02
    for arch in ("lenet", "resnet20", "resnet56"):
        for opt in ("sgd", "adam"):
            assert value[arch, "bp", opt] < value[arch, "dfa", opt]


def test_biotorch_imagenet_resnet18_row_has_all_six_rules():
    rows = _biotorch("imagenet")
    assert sorted(r["method"] for r in rows) == sorted(RULES)
    assert all(r["arch"] == "resnet18" and r["metric"] == "top1_error" for r in rows)
    # Benchmarks.md: SGD for every rule, "For DFA we used Adam".
    assert {r["method"]: r["optimizer"] for r in rows} == {
        rule: "adam" if rule == "dfa" else "sgd" for rule in RULES
    }
