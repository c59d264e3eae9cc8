"""`perf load`: a job's start-up (import, then one dataset load) timed in fresh processes."""

import json

from bench.cli import main as cli


def test_perf_load_times_import_and_load_in_a_fresh_process(tmp_path):
    out = tmp_path / "load.json"
    assert cli(["perf", "load", "--dataset", "digits", "--repeats", "1", "--out", str(out)]) == 0
    (row,) = json.loads(out.read_text())
    assert (
        row["dataset"] == "digits" and row["train_images"] > 1000
    )  # scikit-learn's digits, train split
    assert row["import_s"] > 0 and row["load_s"] > 0


def test_perf_load_bad_dataset_exits_2_naming_it(capsys, tmp_path):
    assert (
        cli(
            [
                "perf",
                "load",
                "--dataset",
                "nope",
                "--repeats",
                "1",
                "--out",
                str(tmp_path / "x.json"),
            ]
        )
        == 2
    )
    assert "unknown dataset 'nope'" in capsys.readouterr().err and not list(tmp_path.iterdir())
