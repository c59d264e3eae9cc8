"""Tables from records: means, std, deltas to BP, missing and diverged runs, published figures, the CLI."""

import json
import logging
import math

import pandas as pd
import pytest
from synthetic_records import write_record

from bench.cli import main
from bench.report.table import COLUMNS, aggregate


@pytest.fixture
def runs(tmp_path):
    """bp (90, 92), dfa (80, 84), ssa (70; seed 1 diverged) on mlp; seed 2 of dfa is planned but missing."""
    runs = tmp_path / "runs"
    for seed, acc in ((0, 90.0), (1, 92.0)):
        write_record(runs, "mlp", "bp", seed, acc)
    for seed, acc in ((0, 80.0), (1, 84.0)):
        write_record(runs, "mlp", "dfa", seed, acc)
    write_record(runs, "mlp", "ssa", 0, 70.0)
    write_record(runs, "mlp", "ssa", 1, 10.0, status="diverged")
    return runs


EXPECTED = [("mlp", m, s) for m in ("bp", "dfa", "ssa") for s in (0, 1)] + [("mlp", "dfa", 2)]


def row(table, method, arch="mlp"):
    return table[(table["method"] == method) & (table["arch"] == arch)].iloc[0]


def test_aggregate_mean_std_and_delta_to_bp(runs):
    table = aggregate(runs, "toy")
    bp, dfa = row(table, "bp"), row(table, "dfa")
    assert bp.test_acc_mean == pytest.approx(91.0)
    assert bp.test_acc_std == pytest.approx(math.sqrt(2.0))  # sample std of 90 and 92
    assert dfa.test_acc_mean == pytest.approx(82.0)
    assert dfa.delta_to_bp == pytest.approx(-9.0)
    assert bp.delta_to_bp == 0.0
    assert list(table.columns) == COLUMNS
    assert list(table["method"]) == ["bp", "dfa", "ssa"]


def test_aggregate_shows_missing_and_diverged_runs(runs):
    table = aggregate(runs, "toy", expected=EXPECTED, allow_missing=True)
    dfa, ssa = row(table, "dfa"), row(table, "ssa")
    assert (dfa.n_seeds, dfa.n_ok, dfa.n_missing, dfa.status) == (3, 2, 1, "missing 1/3")
    assert (ssa.n_seeds, ssa.n_ok, ssa.n_diverged, ssa.status) == (2, 1, 1, "diverged 1/2")
    assert ssa.test_acc_mean == pytest.approx(70.0)  # the diverged seed's 10% is not averaged in
    assert math.isnan(ssa.test_acc_std)
    assert row(table, "bp").status == "ok"


def test_aggregate_missing_run_is_an_error_naming_its_record(runs):
    with pytest.raises(FileNotFoundError, match=r"mlp/dfa/seed2/record\.json.*--allow-missing"):
        aggregate(runs, "toy", expected=EXPECTED)


def test_aggregate_keeps_a_planned_row_with_no_record_at_all(runs):
    table = aggregate(runs, "toy", expected=EXPECTED + [("mlp", "svd_bp", 0)], allow_missing=True)
    svd = row(table, "svd_bp")
    assert (svd.n_seeds, svd.n_missing, svd.status) == (1, 1, "missing 1/1")
    assert math.isnan(svd.test_acc_mean) and pd.isna(svd.trainable_params)


def test_aggregate_expected_grid_leaves_out_other_records(runs):
    table = aggregate(runs, "toy", expected=[("mlp", "bp", 0), ("mlp", "dfa", 0)])
    assert list(table["method"]) == ["bp", "dfa"]
    assert row(table, "bp").test_acc_mean == 90.0 and row(table, "dfa").delta_to_bp == -10.0


def test_aggregate_delta_uses_bp_of_the_same_arch(tmp_path):
    runs = tmp_path / "runs"
    write_record(runs, "a", "bp", 0, 90.0)
    write_record(runs, "a", "dfa", 0, 85.0)
    write_record(runs, "b", "bp", 0, 60.0)
    write_record(runs, "b", "dfa", 0, 50.0)
    write_record(runs, "c", "dfa", 0, 50.0)  # no bp on arch c: no delta
    table = aggregate(runs, "toy")
    assert row(table, "dfa", "a").delta_to_bp == pytest.approx(-5.0)
    assert row(table, "dfa", "b").delta_to_bp == pytest.approx(-10.0)
    assert math.isnan(row(table, "dfa", "c").delta_to_bp)


def test_aggregate_writes_csv_and_markdown(runs, tmp_path):
    aggregate(runs, "toy", expected=EXPECTED, allow_missing=True, out_dir=tmp_path / "out")
    csv = pd.read_csv(tmp_path / "out" / "toy_table.csv")
    assert list(csv.columns) == COLUMNS and len(csv) == 3
    assert csv.loc[0, "trainable_params"] == 1000 and csv.loc[0, "params_mb"] == pytest.approx(4.0)
    md = (tmp_path / "out" / "toy_table.md").read_text()
    assert "| mlp | bp | 2/2 | 3 | last | 91.00 ± 1.41 | +0.00 |" in md
    assert "missing 1/3" in md and "diverged 1/2" in md
    assert not list((tmp_path / "out").glob(".*tmp"))  # atomic writes leave no temp files


def test_aggregate_warns_when_records_come_from_several_commits(tmp_path, caplog):
    runs = tmp_path / "runs"
    write_record(runs, "mlp", "bp", 0, 90.0, commit="aaaa")
    write_record(runs, "mlp", "bp", 1, 90.0, commit="bbbb")
    with caplog.at_level(logging.WARNING, logger="bench.report.table"):
        aggregate(runs, "toy")
    assert "2 git commits" in caplog.text and "aaaa" in caplog.text


def test_aggregate_notes_mixed_commits_and_dirty_trees_under_the_markdown_table(tmp_path, caplog):
    runs = tmp_path / "runs"
    write_record(runs, "mlp", "bp", 0, 90.0, commit="aaaa")
    write_record(runs, "mlp", "dfa", 0, 80.0, commit="aaaa")
    dirty = write_record(runs, "mlp", "dfa", 1, 82.0, commit="bbbb")
    dirty["provenance"]["git_dirty"] = True
    (runs / "toy" / "mlp" / "dfa" / "seed1" / "record.json").write_text(json.dumps(dirty))
    with caplog.at_level(logging.WARNING, logger="bench.report.table"):
        table = aggregate(runs, "toy", out_dir=tmp_path / "out")
    md = (tmp_path / "out" / "toy_table.md").read_text()
    mixed = "the rows mix records from 2 git commits: aaaa (2 runs), bbbb (1 runs)"
    unclean = "1 of 3 runs ran on a working tree with uncommitted changes (git_dirty)"
    assert f"**Warning:** {mixed}." in md and f"**Warning:** {unclean}." in md
    assert mixed in caplog.text and unclean in caplog.text
    assert (
        list(table.columns) == COLUMNS
    )  # the csv keeps its columns; the notes ride along in attrs
    assert table.attrs["notes"] == [mixed, unclean]


def test_aggregate_of_one_clean_commit_has_no_warning(runs, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="bench.report.table"):
        aggregate(runs, "toy", out_dir=tmp_path / "out")
    assert "Warning" not in (tmp_path / "out" / "toy_table.md").read_text() and not caplog.records


def test_aggregate_published_column(runs, tmp_path):
    published = tmp_path / "published.csv"
    published.write_text(
        "dataset,arch,method,metric,value,source\n"
        "toy,mlp,bp,top1_error,8.63,BioTorch 2021\ntoy,mlp,dfa,test_acc,70.5,Someone 2020\n"
        "other,mlp,bp,test_acc,1.0,elsewhere\n"
    )
    table = aggregate(runs, "toy", published_path=published)
    assert row(table, "bp").published == "91.37 [BioTorch 2021]"
    assert row(table, "dfa").published == "70.50 [Someone 2020]"
    assert row(table, "ssa").published == ""
    assert (aggregate(runs, "toy", published_path=tmp_path / "none.csv")["published"] == "").all()


def test_aggregate_rejects_a_record_in_the_wrong_folder(runs):
    path = runs / "toy" / "mlp" / "bp" / "seed0" / "record.json"
    record = json.loads(path.read_text())
    path.write_text(json.dumps(record | {"method": "dfa"}))
    with pytest.raises(ValueError, match="not the run its folder names"):
        aggregate(runs, "toy")


def test_aggregate_without_records_says_where_it_looked(tmp_path):
    with pytest.raises(FileNotFoundError, match="no records of toy"):
        aggregate(tmp_path, "toy")


def test_cli_aggregate_missing_exits_2_and_allow_missing_writes(runs, tmp_path, capsys):
    args = [
        "aggregate",
        "--runs-dir",
        str(runs),
        "--dataset",
        "toy",
        "--out-dir",
        str(tmp_path / "out"),
        "--archs",
        "mlp",
        "--methods",
        "bp",
        "dfa",
        "ssa",
        "--seeds",
        "0",
        "1",
        "2",
    ]
    assert main(args) == 2
    assert "have no record" in capsys.readouterr().err
    assert not (tmp_path / "out" / "toy_table.csv").exists()
    assert main(args + ["--allow-missing"]) == 0
    table = pd.read_csv(tmp_path / "out" / "toy_table.csv")
    assert list(table["status"]) == ["missing 1/3", "missing 1/3", "diverged 1/3, missing 1/3"]


def test_cli_aggregate_needs_every_grid_axis_without_config(runs, tmp_path, capsys):
    assert main(["aggregate", "--runs-dir", str(runs), "--dataset", "toy", "--archs", "mlp"]) == 2
    assert "--methods is needed" in capsys.readouterr().err


def test_the_shipped_published_figures_parse_and_join_by_dataset_arch_method():
    from bench.layout import PUBLISHED
    from bench.report.table import published

    figures = published("imagenet", PUBLISHED)
    assert [figure[:2] for figure in figures[("resnet18", "bp")]] == [  # (optimizer, text)
        (
            "sgd",
            "69.61 [BioTorch (Sanfiz & Akrout 2021, arXiv 2108.13446, Benchmarks.md), SGD, 75 epochs]",
        ),
        ("", "66.90 [FFCV (Leclerc et al. 2023), 16 epochs, 1 x A100, 35 min]"),
        ("", "72.40 [FFCV (Leclerc et al. 2023), 88 epochs, 1 x A100, 187 min]"),
    ]
    assert figures[("resnet18", "dfa")][0][1].startswith("17.55 [BioTorch")
    assert ("resnet20", "dfa") in published("cifar10", PUBLISHED)


def test_table_reports_the_selected_epoch_update_alignment_and_feedback_memory(tmp_path):
    runs = tmp_path / "runs"
    plain = write_record(runs, "mlp", "bp", 0, 90.0)
    chosen = write_record(runs, "mlp", "fa", 0, 80.0)
    chosen |= {"selection": "best_val", "selected_epoch": 2, "selected_test_acc": 75.0}
    chosen |= {"best_val_acc": 70.0, "recipe": {"epochs": 3, "val_split": 100}}
    chosen["history"][1]["test_acc"] = 75.0
    for entry, value in zip(chosen["history"], (50.0, 70.0, 60.0)):
        entry["val_acc"] = value  # epoch 2 is the best on validation
    chosen["memory"]["feedback"] = 2_000_000
    for entry, value in zip(chosen["history"], (0.2, 0.3, 0.4)):
        entry["update_alignment"] = {"blocks.0": value, "head": 1.0, "blocks.1": None}
    plain["history"][-1]["update_alignment"] = {"blocks.0": 1.0, "head": 1.0}
    for record in (plain, chosen):
        (runs / "toy" / "mlp" / record["method"] / "seed0" / "record.json").write_text(
            json.dumps(record)
        )
    table = aggregate(runs, "toy")
    fa, bp = row(table, "fa"), row(table, "bp")
    assert (
        fa.test_acc_mean == 75.0 and fa.selection == "best_val"
    )  # the best-validation epoch, not the last
    assert bp.test_acc_mean == 90.0 and bp.selection == "last"
    # last epoch, mean over the defined hidden layers: the head's 1 is left out
    assert fa.update_alignment == pytest.approx(0.4) and bp.update_alignment == 1.0
    assert fa.feedback_mb == 2.0 and math.isnan(
        bp.feedback_mb
    )  # an old record without the field: unknown
    md = (aggregate(runs, "toy", out_dir=tmp_path) is not None) and (
        tmp_path / "toy_table.md"
    ).read_text()
    assert "| best val |" in md and "| 0.400 |" in md


def test_published_figures_stand_beside_runs_of_the_same_optimizer_and_dataset_alias(tmp_path):
    runs = tmp_path / "runs"
    for method, optimizer in (("bp", "adam"), ("dfa", "sgd"), ("fa", "adamw")):
        record = write_record(runs, "lenet", method, 0, 60.0, dataset="cifar10-jpeg")
        record["recipe"]["optimizer"] = optimizer
        (runs / "cifar10-jpeg" / "lenet" / method / "seed0" / "record.json").write_text(
            json.dumps(record)
        )
    table = aggregate(runs, "cifar10-jpeg", published_as="cifar10")
    bp, dfa, fa = (row(table, m, "lenet") for m in ("bp", "dfa", "fa"))
    assert (
        bp.published.startswith("84.08 [") and "Adam" in bp.published and "SGD" not in bp.published
    )
    assert (
        dfa.published.startswith("45.79 [")
        and "SGD" in dfa.published
        and "Adam" not in dfa.published
    )
    assert fa.published == ""  # BioTorch ran no AdamW: nothing like it to compare with
    assert set(aggregate(runs, "cifar10-jpeg")["published"]) == {
        ""
    }  # without the alias: its own name
