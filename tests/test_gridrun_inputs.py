"""`python -m bench grid` refuses bad input before any run starts (issue 26, class 9): an unknown arch or
dataset, a run listed twice, a perf table whose median_ms is not a time; and a dataset folder the suite
cannot name is told as refused by the name rule, not as missing."""

from pathlib import Path

import pytest

from bench.cli import main
from bench.data import check_name
from bench.gridrun.epochs import estimate_epochs, read_perf_table

REPO = Path(__file__).resolve().parent.parent
PERF_HEADER = "arch,method,median_ms,ratio_to_bp,device\n"


def grid(tmp_path, capsys, *extra: str, **axes: list[str]) -> str:
    """Run `bench grid` on digits/mlp3/bp, with `axes` replacing --archs/--methods/--seeds; assert it exits
    2 with one line and starts nothing (no results folder); return the line."""
    argv = ["grid", "--dataset", "digits", "--results", str(tmp_path / "r"), "--deadline-s", "60"]
    for key, default in (("archs", ["mlp3"]), ("methods", ["bp"]), ("seeds", ["0"])):
        argv += [f"--{key}", *axes.get(key, default)]
    assert main(argv + list(extra)) == 2
    err = capsys.readouterr().err
    assert not (tmp_path / "r").exists()  # refused before any run: no run folder, no status.csv
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


@pytest.mark.parametrize(
    "axes,message",
    [
        ({"archs": ["mlp4"]}, "--archs: unknown arch 'mlp4'; known: "),
        ({"archs": ["mlp3", "smallconv", "mlp3"]}, "--archs lists 'mlp3' twice"),
        (
            {"methods": ["bp", "dfa", "bp"]},
            "--methods lists 'bp' twice; accepted: each method once",
        ),
        ({"seeds": ["0", "1", "0"]}, "--seeds lists 0 twice; accepted: each seed once"),
    ],
)
def test_an_unknown_arch_or_a_run_listed_twice_is_refused_before_any_run(
    tmp_path, capsys, axes, message
):
    assert message in grid(tmp_path, capsys, **axes)


def test_an_unknown_dataset_is_refused_before_any_run(tmp_path, capsys):
    err = grid(tmp_path, capsys, "--dataset", "cifar7")
    assert "unknown dataset 'cifar7'; known: cifar10" in err


@pytest.mark.parametrize("name", ["my data", "données"])
def test_a_dataset_folder_with_a_name_the_suite_refuses_is_told_so_not_missing(
    tmp_path, capsys, name
):
    data = tmp_path / "data"
    (data / name / "train" / "a").mkdir(parents=True)
    (data / name / "test" / "a").mkdir(parents=True)
    with pytest.raises(ValueError) as error:
        check_name(name, data)
    text = str(error.value)
    assert f"bad dataset name {name!r}" in text and "not found" not in text
    assert "ASCII letters, digits" in text and f"{data / name} exists: rename it" in text
    err = grid(tmp_path, capsys, "--dataset", name, "--data-dir", str(data))
    assert f"bad dataset name {name!r}" in err


def test_a_folder_that_is_no_image_tree_is_named_with_what_it_lacks(tmp_path):
    (tmp_path / "flat").mkdir()
    (tmp_path / "afile").write_text("")
    with pytest.raises(ValueError, match=r"flat is a folder without a train/ folder"):
        check_name("flat", tmp_path)
    with pytest.raises(ValueError, match=r"afile is a file without a train/ folder"):
        check_name("afile", tmp_path)
    with pytest.raises(ValueError, match=r"unknown dataset 'absent'.*absent/train not found"):
        check_name("absent", tmp_path)
    (tmp_path / "ok-1.5" / "train").mkdir(parents=True)
    check_name("ok-1.5", tmp_path)  # a valid name with its tree is taken


def test_a_name_the_file_system_cannot_take_is_refused_by_the_rule_not_an_oserror(tmp_path):
    for name in ("a" * 300, "a\x00b", "../escape", ""):
        with pytest.raises(ValueError, match="bad dataset name .*at most 100 characters"):
            check_name(name, tmp_path)


@pytest.mark.parametrize(
    "table,message",
    [
        (
            PERF_HEADER + "mlp3,bp,nan,1.0,cpu\n",
            "line 2: bad value 'nan' for 'median_ms' (mlp3 bp)",
        ),
        (PERF_HEADER + "mlp3,bp,fast,1.0,cpu\n", "line 2: bad value 'fast' for 'median_ms'"),
        (PERF_HEADER + "mlp3,bp,,1.0,cpu\n", "line 2: bad value '' for 'median_ms'"),
        (PERF_HEADER + "mlp3,bp,inf,1.0,cpu\n", "bad value 'inf' for 'median_ms'"),
        (PERF_HEADER + "mlp3,bp,0,1.0,cpu\n", "bad value '0' for 'median_ms'"),
        (PERF_HEADER + "mlp3,bp\n", "line 2: bad value None for 'median_ms'"),
        ("arch,method,ratio_to_bp\nmlp3,bp,1.0\n", "line 1: missing column(s) median_ms"),
        ("", "line 1: missing column(s) arch, method, median_ms"),
        (PERF_HEADER + ",bp,2,1.0,cpu\n", "line 2: no arch or method"),
        (PERF_HEADER + "mlp3,bp,2,1,cpu\nmlp3,bp,3,1,cpu\n", "line 3: mlp3 bp again (line 2)"),
    ],
)
def test_a_perf_table_without_a_step_time_is_refused_naming_file_and_line(
    tmp_path, capsys, table, message
):
    path = tmp_path / "perf.csv"
    path.write_text(table)
    err = grid(tmp_path, capsys, "--epochs", "auto", "--perf-table", str(path))
    assert f"--perf-table {path}" in err and message in err


def test_a_missing_perf_table_or_a_folder_is_named(tmp_path, capsys):
    missing = tmp_path / "none.csv"
    assert f"--perf-table {missing} not found" in grid(
        tmp_path, capsys, "--epochs", "auto", "--perf-table", str(missing)
    )
    assert "is not a regular file" in grid(
        tmp_path, capsys, "--epochs", "auto", "--perf-table", str(tmp_path)
    )


def test_the_committed_perf_tables_pass_and_size_the_epochs():
    rows = read_perf_table(REPO / "results" / "perf" / "cpu_step.csv")
    assert len(rows) == 30 and rows[0]["line"] == 2
    bp = next(
        float(r["median_ms"]) for r in rows if (r["arch"], r["method"]) == ("smallconv", "bp")
    )
    # one smallconv bp run, 390 steps x median x 1.3, 15 s to start, one job: epochs = floor(room / cost)
    epochs, _ = estimate_epochs(rows, [("smallconv", "bp", 0)], 50000, 128, 600, 1, 1, most=1000)
    assert epochs == int((600 - 15) / (390 * bp / 1000 * 1.3))


def test_a_results_folder_that_is_a_file_is_named_before_any_run(tmp_path, capsys):
    (tmp_path / "taken").write_text("")
    err = grid(tmp_path, capsys, "--results", str(tmp_path / "taken" / "r"))
    assert f"{tmp_path / 'taken'} is a file; give a folder" in err


def test_perf_step_times_a_repeated_arch_or_method_once_so_its_table_stays_one_row_each(
    tmp_path, caplog
):
    out = tmp_path / "perf.csv"
    argv = ["perf", "step", "--device", "cpu", "--arch", "mlp3", "mlp3", "--methods", "bp", "dfa"]
    argv += ["bp", "--steps", "1", "--warmup", "0", "--batch-size", "4", "--peak-size", "32"]
    assert main(argv + ["--set", "compile=off", "--out", str(out)]) == 0
    rows = read_perf_table(out)  # the grid's check: one row per (arch, method)
    assert [(r["arch"], r["method"]) for r in rows] == [("mlp3", "bp"), ("mlp3", "dfa")]
    assert "--methods lists ['bp', 'dfa', 'bp'] more than once" in caplog.text
    assert "--arch lists ['mlp3', 'mlp3'] more than once" in caplog.text
