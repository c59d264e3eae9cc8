"""Figures from records: every file written, the plotted numbers are the records', empty data says so."""

import numpy as np
import pytest
from synthetic_records import write_record

from bench.cli import main
from bench.report import curves, memory_figure
from bench.report import figures as plots
from bench.report.records import collect

RANKS = {"blocks.0.0": 20, "blocks.1.0": 10}


@pytest.fixture
def runs(tmp_path):
    runs = tmp_path / "runs"
    for seed in (0, 1):
        write_record(runs, "mlp", "bp", seed, 90.0 + 2 * seed)
        write_record(runs, "mlp", "dfa", seed, 80.0)
        write_record(runs, "mlp", "ssa", seed, 85.0, ranks=RANKS, params=800)
        write_record(runs, "cnn", "bp", seed, 95.0)
    write_record(runs, "mlp", "ssa-no_align", 0, 84.0, ranks=RANKS)
    return runs


def texts(fig) -> str:
    return " ".join(t.get_text() for ax in fig.axes for t in ax.texts)


def test_plot_writes_every_figure_as_png_and_pdf(runs, tmp_path):
    written = plots.plot(runs, "toy", tmp_path / "figures")
    names = sorted(p.name for p in written)
    assert names == sorted(f"toy_{n}.{f}" for n in plots.FIGURES for f in ("png", "pdf"))
    for path in written:
        head = path.read_bytes()[:8]
        assert head.startswith(b"\x89PNG" if path.suffix == ".png" else b"%PDF"), path


def test_plot_without_runs_still_writes_files_that_say_so(tmp_path):
    written = plots.plot(
        tmp_path / "runs", "toy", tmp_path / "figures", expected=[("mlp", "bp", 0)]
    )
    assert len(written) == 2 * len(plots.FIGURES)
    assert all(p.stat().st_size > 0 for p in written)
    for draw in plots.FIGURES.values():  # one line: the figure, "nothing to show" and why
        fig = draw({}, "toy")
        assert "nothing to show: " in texts(fig) and len(fig.axes) == 1 and not fig.axes[0].axison


def test_accuracy_bars_are_seed_means(runs):
    records, _ = collect(runs, "toy")
    fig = plots.fig_accuracy(records, "toy")
    heights = sorted(round(p.get_height(), 6) for p in fig.axes[0].patches)
    assert heights == [80.0, 84.0, 85.0, 91.0, 95.0]  # bp on mlp is the mean of 90 and 92
    assert "architecture" == fig.axes[0].get_xlabel() and "%" in fig.axes[0].get_ylabel()


def test_diverged_runs_are_marked_not_dropped(runs):
    write_record(runs, "mlp", "dfa", 2, 10.0, status="diverged")
    write_record(
        runs, "cnn", "ssa", 0, 10.0, status="diverged"
    )  # no finished seed at all: still shown
    records, _ = collect(runs, "toy")
    fig = plots.fig_accuracy(records, "toy")
    assert "diverged 1/3" in texts(fig) and "diverged 1/1" in texts(fig)
    assert 10.0 not in [round(p.get_height(), 6) for p in fig.axes[0].patches]  # not in the means


def test_ablation_needs_ssa_runs(runs):
    records, _ = collect(runs, "toy")
    without_ssa = {k: r for k, r in records.items() if not k[1].startswith("ssa")}
    assert "no runs of SSA variants" in texts(plots.fig_ablation(without_ssa, "toy"))
    fig = plots.fig_ablation(records, "toy")
    labels = list(dict.fromkeys(fig.axes[0].get_legend_handles_labels()[1]))
    assert labels == ["bp", "dfa", "ssa", "ssa-no_align"]


def test_rank_lines_are_total_rank_per_epoch(runs):
    records, _ = collect(runs, "toy")
    fig = curves.fig_rank(records, "toy")
    mlp = next(ax for ax in fig.axes if ax.get_title() == "mlp")
    lines = {line.get_label(): line for line in mlp.lines}
    assert set(lines) == {"ssa", "ssa-no_align"}  # bp and dfa have no SVD layers
    assert list(lines["ssa"].get_ydata()) == [30 - 2 * e for e in (1, 2, 3)]
    assert list(lines["ssa"].get_xdata()) == [1, 2, 3]


def test_alignment_is_the_mean_over_blocks_and_seeds(runs):
    records, _ = collect(runs, "toy")
    fig = curves.fig_alignment(records, "toy")
    mlp = next(ax for ax in fig.axes if ax.get_title() == "mlp")
    dfa = next(line for line in mlp.lines if line.get_label() == "dfa")
    assert np.allclose(dfa.get_ydata(), [0.2, 0.4, 0.6])  # mean of (0.1 e, 0.3 e)


def test_memory_stack_adds_the_four_parts(runs):
    records, _ = collect(runs, "toy")
    fig = memory_figure.fig_memory(records, "toy")
    top = max(p.get_y() + p.get_height() for p in fig.axes[0].patches)
    assert top == pytest.approx(4 + 4 + 8 + 3)  # MB, from the synthetic records' memory
    assert "MB" in fig.axes[0].get_ylabel()


def test_cli_plot(runs, tmp_path):
    assert (
        main(
            ["plot", "--runs-dir", str(runs), "--dataset", "toy", "--out-dir", str(tmp_path / "f")]
        )
        == 0
    )
    assert (tmp_path / "f" / "toy_accuracy.png").is_file() and (
        tmp_path / "f" / "toy_rank.pdf"
    ).is_file()


def test_figure_bytes_are_the_same_for_the_same_figure():
    """Regenerated figures do not differ by a creation date (committed PDFs stay unchanged)."""
    import time

    import matplotlib.pyplot as plt

    from bench.report.figures import figure_bytes

    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    first = figure_bytes(fig, "pdf")
    time.sleep(1.1)  # a creation date would now differ by a second
    assert first.startswith(b"%PDF") and figure_bytes(fig, "pdf") == first
    assert figure_bytes(fig, "png") == figure_bytes(fig, "png")
    plt.close(fig)
