"""config/published.csv is checked as a whole before a figure is shown (issue 26, class 4): columns, each
value's type and range, a source on every row, no figure twice, naming the file and line; an unknown
`--published-as` is refused naming the datasets that have figures."""

import csv

import pytest
from synthetic_records import write_record

from bench.cli import main
from bench.config.recipe import RECIPE
from bench.layout import PUBLISHED
from bench.report.published import Figure, read
from bench.report.table import aggregate, published

HEADER = "dataset,arch,method,metric,value,source,optimizer\n"
GOOD = "toy,mlp,bp,top1_error,8.5,Paper 2021,sgd\n"


@pytest.fixture
def runs(tmp_path):
    runs = tmp_path / "runs"
    write_record(runs, "mlp", "bp", 0, 90.0)
    return runs


def test_the_committed_published_file_passes_every_check_row_for_row():
    rows = read(PUBLISHED)
    with open(PUBLISHED, newline="") as f:
        assert len(rows) == len(list(csv.DictReader(f))) == 74
    assert {row["dataset"] for row in rows} == {"cifar10", "cifar100", "imagenet", "mnist"}


@pytest.mark.parametrize(
    "text,message",
    [
        (HEADER + GOOD + GOOD, r"line 3: the figure of line 2 again"),
        (HEADER + GOOD.replace("8.5", "150"), r"line 2: bad value '150' for 'value'.*0 to 100"),
        (HEADER + GOOD.replace("8.5", "-50"), r"line 2: bad value '-50' for 'value'"),
        (HEADER + GOOD.replace("8.5", "inf"), r"line 2: bad value 'inf' for 'value'.*finite"),
        (HEADER + GOOD.replace("8.5", "nan"), r"line 2: bad value 'nan' for 'value'"),
        (HEADER + GOOD.replace("8.5", "ninety"), r"line 2: bad value 'ninety' for 'value'"),
        (HEADER + GOOD.replace("8.5", ""), r"line 2: bad value '' for 'value'"),
        (HEADER + GOOD.replace("top1_error", "top1_eror"), r"'top1_eror' for 'metric'.*test_acc"),
        (HEADER + GOOD.replace(",sgd", ",SGD"), r"'SGD' for 'optimizer'.*sgd, adam, adamw"),
        (HEADER + GOOD.replace("Paper 2021", "  "), r"line 2: no 'source' for toy/mlp/bp"),
        (HEADER + GOOD.replace("mlp", " mlp"), r"line 2: bad value ' mlp' for 'arch'"),
        (HEADER + GOOD.replace(",sgd", ",sgd,extra"), r"line 2: 8 fields; accepted: 7"),
        (
            HEADER.replace(",source", "") + "toy,mlp,bp,test_acc,8.5,sgd\n",
            r"line 1: missing.*source",
        ),
        (HEADER.replace("optimizer", "notes") + GOOD, r"line 1: unknown column 'notes'"),
        (HEADER.replace("optimizer", "value") + GOOD, r"line 1: column 'value' twice"),
        ("", r"line 1: missing column\(s\) dataset"),
    ],
    ids=[
        "duplicate",
        "error_150",
        "negative",
        "inf",
        "nan",
        "text",
        "empty_value",
        "metric",
        "optimizer",
        "no_source",
        "name_space",
        "fields",
        "missing_column",
        "unknown_column",
        "column_twice",
        "empty_file",
    ],
)
def test_a_bad_published_file_is_refused_naming_file_and_line(tmp_path, runs, text, message):
    path = tmp_path / "published.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as error:
        published("toy", path)
    assert str(path) in str(error.value)
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=message):  # the table refuses it: nothing half-written
        aggregate(runs, "toy", out_dir=out, published_path=path)
    assert not out.exists() or not any(out.iterdir())


def test_a_bad_row_of_another_dataset_is_refused_too(tmp_path):
    path = tmp_path / "published.csv"
    path.write_text(HEADER + GOOD + "other,mlp,bp,top1_error,150,Elsewhere,\n")
    with pytest.raises(ValueError, match="line 3: bad value '150'"):
        published("toy", path)


def test_a_good_file_joins_one_figure_per_row_and_quoted_commas_stay_in_the_source(tmp_path):
    path = tmp_path / "published.csv"
    path.write_text(HEADER + GOOD + 'toy,mlp,bp,test_acc,91,"Paper 2021, Adam",adam\n\n')
    assert published("toy", path) == {
        ("mlp", "bp"): [
            Figure("sgd", "91.50 [Paper 2021]"),
            Figure("adam", "91.00 [Paper 2021, Adam]"),
        ]
    }


@pytest.mark.parametrize("optimizer", RECIPE["optimizer"].choices)
def test_a_figure_of_every_recipe_optimizer_joins(tmp_path, optimizer):
    """The published file takes every optimizer the recipe does (rmsprop came with BioTorch's options)."""
    path = tmp_path / "published.csv"
    path.write_text(HEADER + f"toy,mlp,bp,test_acc,88,Paper 2021,{optimizer}\n")
    assert published("toy", path) == {("mlp", "bp"): [Figure(optimizer, "88.00 [Paper 2021]")]}


def test_an_unknown_published_as_is_refused_naming_the_datasets_with_figures(runs, tmp_path):
    with pytest.raises(
        ValueError, match=r"published_as 'svhn'.*accepted: cifar10, cifar100, imagenet"
    ):
        aggregate(runs, "toy", published_as="svhn")
    path = tmp_path / "published.csv"
    path.write_text(HEADER + GOOD)
    shown = aggregate(runs, "toy", published_path=path, published_as="toy")
    assert list(shown["published"]) == ["91.50 [Paper 2021]"]


def test_cli_aggregate_exits_2_on_an_unknown_published_as_and_writes_nothing(
    runs, tmp_path, capsys
):
    out = tmp_path / "out"
    argv = ["aggregate", "--runs-dir", str(runs), "--dataset", "toy", "--out-dir", str(out)]
    assert main(argv + ["--published-as", "cifar-10"]) == 2
    err = capsys.readouterr().err
    assert (
        "published_as 'cifar-10'" in err and "accepted: cifar10, cifar100, imagenet, mnist" in err
    )
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (out / "toy_table.csv").exists()
    assert main(argv + ["--published-as", "cifar10"]) == 0  # a dataset with figures is taken
    assert (out / "toy_table.csv").exists()
