"""The one summary of a group of runs (bench/report/summary.py) and the one markdown writer, which the
table, the figures, claims.md and findings.md share: a figure's number is the table's."""

import json
import math

import pytest
from synthetic_records import typed_record, write_record

from bench.record import Memory
from bench.report import markdown as md
from bench.report import summary
from bench.report.figures import fig_accuracy, fig_params
from bench.report.memory_figure import fig_memory
from bench.report.plotting import plt
from bench.report.records import collect
from bench.report.table import aggregate


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_summary_of_values_mean_sample_std_and_standard_error():
    s = summary.Summary.of([1.0, None, 2.0, 3.0])
    assert (s.n, s.n_ok, s.mean) == (3, 3, 2.0)
    assert s.std == pytest.approx(1.0) and s.se == pytest.approx(1 / math.sqrt(3))
    one = summary.Summary.of([5.0])
    assert one.mean == 5.0 and math.isnan(one.std) and math.isnan(one.se)
    assert math.isnan(summary.Summary.of([]).mean)


def test_accuracy_counts_finished_and_diverged_runs(tmp_path):
    for seed, acc in enumerate((80.0, 82.0)):
        write_record(tmp_path, "mlp", "dfa", seed, acc)
    write_record(tmp_path, "mlp", "dfa", 2, 10.0, status="diverged")
    records, _ = collect(tmp_path, "toy")
    acc = summary.accuracy(list(records.values()))
    assert (acc.n_ok, acc.n_diverged, acc.values, acc.mean) == (2, 1, (80.0, 82.0), 81.0)


def test_standard_errors_of_a_difference_own_and_pooled():
    a, b = summary.Summary.of([1.0, 3.0]), summary.Summary.of([2.0, 4.0, 6.0])
    assert summary.diff_se(a, b) == pytest.approx(math.sqrt(2 / 2 + 4 / 3))
    assert math.isnan(summary.diff_se(a, summary.Summary.of([1.0])))
    std, used = summary.pooled_std(
        [a, b, summary.Summary.of([7.0])]
    )  # the 1-value group has no std
    assert used == 2 and std == pytest.approx(math.sqrt((1 * 2 + 2 * 4) / 3))
    assert summary.pooled_std([summary.Summary.of([7.0])]) == (None, 0)
    assert summary.pooled_diff_se(2.0, 4, 4) == pytest.approx(2.0 * math.sqrt(0.5))


def test_memory_mb_sums_parts_per_record_and_skips_unmeasured_records():
    def measured(**parts):
        return typed_record(memory=Memory(**parts))

    records = [measured(params=1_000_000, grads=3_000_000), measured(params=2_000_000), measured()]
    assert summary.memory_mb(records, "params", "grads") == pytest.approx(3.0)  # (4 + 2) / 2 MB
    assert math.isnan(summary.memory_mb(records, "feedback"))


def test_markdown_table_and_cells():
    assert md.table(["a", "b"], [[1, "x"]]) == ["| a | b |", "|---|---|", "| 1 | x |"]
    assert md.mean_std(1.234, math.nan) == "1.23" and md.mean_std(1.0, 0.5) == "1.00 ± 0.50"
    assert md.mean_std(math.nan, 1.0) == md.number(None) == "—"


def _grid(runs):
    for seed in (0, 1, 2):
        for method, acc, feedback in (
            ("bp", 90.0, 0),
            ("fa", 70.0 + seed, 2_000_000),
            ("dfa", 60.0, 500_000),
        ):
            record = write_record(runs, "mlp", method, seed, acc + seed)
            record["memory"]["feedback"] = feedback
            record["feedback_params"] = feedback // 4
            (runs / "toy" / "mlp" / method / f"seed{seed}" / "record.json").write_text(
                json.dumps(record)
            )


def test_a_figure_shows_the_tables_numbers(tmp_path):
    _grid(tmp_path)
    table = aggregate(tmp_path, "toy").set_index("method")
    records, _ = collect(tmp_path, "toy")
    bars = fig_accuracy(records, "toy").axes[0].patches
    assert sorted(p.get_height() for p in bars) == sorted(
        table["test_acc_mean"]
    )  # the same floats, not approx
    below = fig_memory(records, "toy").axes[1]  # the feedback alone, one bar per method
    shown = [label.get_text() for label in below.get_xticklabels()]
    assert [p.get_height() for p in below.patches] == list(table.loc[shown, "feedback_mb"])
    assert (
        len({p.get_height() for p in below.patches}) == 3
    )  # the rules' feedback differs, so do the bars


def test_params_figure_marks_trainable_plus_feedback(tmp_path):
    _grid(tmp_path)
    records, _ = collect(tmp_path, "toy")
    ax = fig_params(records, "toy").axes[0]
    hollow = {
        tuple(line.get_xydata()[0])
        for line in ax.lines
        if line.get_markerfacecolor() == "none" and len(line.get_xdata()) == 1
    }
    assert {x for x, _ in hollow} == {
        1000 + 500_000,
        1000 + 125_000,
    }  # fa and dfa; bp has no feedback
