"""Sweeps: expansion into variants (names, dedupe, recipe keys), the config-file check, and the report."""

import json

import pandas as pd
import pytest
import yaml
from synthetic_records import write_record

from bench.cli import main
from bench.config import grid, sweep
from bench.config.files import coerce_numbers, load_config
from bench.config.schema import validate
from bench.layout import REPO
from bench.record import Record
from bench.report.findings import bp_reference, report
from bench.report.sweep_figures import base_label, sensitivity_figures

CONFIG = REPO / "config" / "config.yaml"
SWEEPS = {
    "s": {
        "impl": "ssa",
        "base": {"rank_epochs": [1]},
        "options": {"rank_ratio": [1.0, 0.5, 0.25], "lambda_align": [0.0, 1.0], "lr": [0.003]},
    },
    "d": {"impl": "dfa", "options": {"scale": [0.1], "optimizer": ["sgd"]}},
}


def config_with(sweeps: dict, methods: list[str]) -> dict:
    config = yaml.safe_load(CONFIG.read_text())
    config["sweeps"] = sweeps
    config["datasets"] = {
        "digits": {"archs": ["mlp3"], "methods": methods, "recipe": {"epochs": 1}}
    }
    return validate(coerce_numbers(config))


def test_one_at_a_time_names_each_point_and_skips_defaults():
    names = list(sweep.points("s", SWEEPS["s"]))
    # rank_ratio 1.0 is ssa's default, so that point is the base and is not run twice
    assert names == [
        "s-base",
        "s-rank_ratio_0p5",
        "s-rank_ratio_0p25",
        "s-lambda_align_0p0",
        "s-lambda_align_1p0",
        "s-lr_0p003",
    ]
    assert len(set(names)) == len(names)


def test_grid_design_is_the_full_factorial():
    spec = {
        "impl": "ssa",
        "design": "grid",
        "options": {"rank_ratio": [0.5, 0.25], "align_on": ["top", "all"]},
    }
    found = sweep.points("g", spec)
    assert list(found) == [
        "g-rank_ratio_0p5-align_on_top",
        "g-rank_ratio_0p5-align_on_all",
        "g-rank_ratio_0p25-align_on_top",
        "g-rank_ratio_0p25-align_on_all",
    ]
    assert found["g-rank_ratio_0p25-align_on_all"] == {"rank_ratio": 0.25, "align_on": "all"}


def test_expand_adds_variants_that_keep_their_recipe_keys():
    grids = grid.grids(sweep.expand(config_with(SWEEPS, ["bp", "s", "d"])))
    digits = grids["digits"]
    assert digits.methods[:3] == ("bp", "s-base", "s-rank_ratio_0p5")
    assert "d-optimizer_sgd" in digits.methods and "d-scale_0p1" in digits.methods
    assert digits.recipe_for("s-lr_0p003")["lr"] == 0.003 and "lr" not in digits.recipe_for(
        "s-base"
    )
    assert digits.recipe_for("d-optimizer_sgd")["optimizer"] == "sgd"
    points = grid.grids(sweep.expand(config_with(SWEEPS, ["bp", "s-lr_0p003", "d-optimizer_sgd"])))[
        "digits"
    ]
    assert points.methods == (
        "bp",
        "s-lr_0p003",
        "d-optimizer_sgd",
    )  # single points keep their recipe keys
    assert (
        points.recipe_for("s-lr_0p003")["lr"] == 0.003
        and points.recipe_for("d-optimizer_sgd")["optimizer"] == "sgd"
    )
    expanded = sweep.expand(config_with(SWEEPS, ["bp"]))
    assert expanded["variants"]["s-rank_ratio_0p5"] == {
        "impl": "ssa",
        "rank_epochs": [1],
        "rank_ratio": 0.5,
    }
    assert expanded["variants"]["s-lr_0p003"]["lr"] == 0.003  # one variant: options and recipe keys


@pytest.mark.parametrize(
    "sweeps, key",
    [
        (
            {"s": {"impl": "ssa", "design": "random", "options": {"rank_ratio": [0.5]}}},
            "sweeps.s.design",
        ),
        ({"bp": {"impl": "ssa", "options": {"rank_ratio": [0.5]}}}, "sweeps.bp"),
        ({"s": {"impl": "ssa", "options": {"rank_ratoi": [0.5]}}}, "variants.s-rank_ratoi_0p5"),
        ({"s": {"impl": "ssa", "options": {"rank_ratio": [2.0]}}}, "variants.s-rank_ratio_2p0"),
        (
            {"s": {"impl": "ssaa", "options": {"rank_ratio": [0.5]}}},
            "sweeps.s.impl: unknown method",
        ),
    ],
)
def test_bad_sweeps_are_refused_naming_the_key(sweeps, key):
    config = yaml.safe_load(CONFIG.read_text()) | {"sweeps": sweeps}
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        grid.grids(sweep.expand(validate(config)))


def test_trainer_variants_come_from_the_merged_files(tmp_path):
    overlay = tmp_path / "sweep.yaml"
    overlay.write_text(
        yaml.safe_dump({"sweeps": SWEEPS, "variants": {"ssa": {"impl": "ssa", "rank_epochs": [1]}}})
    )
    config = load_config([CONFIG, overlay])
    variants = config.variants
    assert variants["ssa"] == {"impl": "ssa", "rank_epochs": [1]}  # the later file wins, key by key
    assert variants["s-lambda_align_1p0"]["lambda_align"] == 1.0 and "ssa-no_align" in variants
    assert config.files == (str(CONFIG), str(overlay)) and config.sweeps == SWEEPS
    # the Snakefile's config laid on top may change anything but the files' variants and sweeps
    assert load_config([CONFIG, overlay], {"seeds": ["4"]}).grids["digits"].seeds == (4,)
    with pytest.raises(ValueError, match="config key sweeps"):
        load_config([CONFIG, overlay], {"sweeps": {"s": {"options": {"rank_ratio": [0.1]}}}})


def test_cli_trains_a_sweep_point(tmp_path):
    overlay = tmp_path / "sweep.yaml"
    overlay.write_text(yaml.safe_dump({"sweeps": SWEEPS}))
    out = tmp_path / "run"
    args = [
        "train",
        "--dataset",
        "digits",
        "--arch",
        "mlp3",
        "--method",
        "s-rank_ratio_0p5",
        "--set",
        "epochs=1",
        "--config",
        str(CONFIG),
        "--config",
        str(overlay),
        "--out",
        str(out),
    ]
    assert main(args) == 0
    record = json.loads((out / "record.json").read_text())
    assert record["method"] == "s-rank_ratio_0p5" and record["impl"] == "ssa"
    assert record["options"]["rank_ratio"] == 0.5 and record["options"]["rank_epochs"] == [1]
    assert main(args[:6] + ["s-nope"] + args[7:]) == 2  # an unknown point is refused


def typed(records: list[dict]) -> list[Record]:
    """The records as the report reads them (bench/record/types.py): checked, typed."""
    return [Record.from_json(r) for r in records]


def _records(runs, accs: dict[str, float], seeds=(0,)):
    """Synthetic records of the SWEEPS points and bp, with options and recipe as the trainer writes them."""
    points = {**sweep.points("s", SWEEPS["s"]), **sweep.points("d", SWEEPS["d"])}
    records = []
    for method, acc in accs.items():
        for seed in seeds:
            record = write_record(runs, "mlp3", method, seed, acc + seed * 0.1, dataset="digits")
            settings = points.get(method, {})
            record["impl"] = "bp" if method == "bp" else "dfa" if method.startswith("d-") else "ssa"
            record["options"] = {k: v for k, v in settings.items() if k not in ("lr", "optimizer")}
            record["recipe"] = {
                "lr": settings.get("lr", 0.001),
                "optimizer": settings.get("optimizer", "adamw"),
            }
            records.append(record)
    return records


def test_report_writes_table_figures_and_findings(tmp_path):
    accs = {
        "bp": 90.0,
        "s-base": 80.0,
        "s-rank_ratio_0p5": 79.9,
        "s-rank_ratio_0p25": 79.5,
        "s-lambda_align_0p0": 70.0,
        "s-lambda_align_1p0": 84.0,
        "s-lr_0p003": 80.2,
        "d-base": 75.0,
        "d-scale_0p1": 77.0,
        "d-optimizer_sgd": 60.0,
    }
    records = _records(tmp_path / "runs", accs, seeds=(0, 1))
    table = report(typed(records), SWEEPS, "digits", tmp_path / "out")
    saved = pd.read_csv(tmp_path / "out" / "digits_sweep.csv")
    assert {"rank_ratio", "lambda_align", "lr", "scale", "optimizer", "option", "value"} <= set(
        saved.columns
    )
    row = saved.set_index("method").loc["s-rank_ratio_0p25"]
    assert row["rank_ratio"] == 0.25 and row["option"] == "rank_ratio" and row["n_ok"] == 2
    assert len(table) == len(accs) and saved["method"].is_unique
    text = (tmp_path / "out" / "findings.md").read_text()
    assert "`s-lambda_align_1p0` (lambda_align = 1.0): 84.05 ± 0.07 %" in text
    assert (
        "Margin over DFA (`d-base`" in text
        and "Margin over the best DFA found (`d-scale_0p1`" in text
    )
    # every point: seeds 0, 1 at acc, acc + 0.1 (std 0.07); 2 SE of a difference of 2-seed means: 0.14
    assert "seed std 0.07 pooled over 6 multi-seed points" in text
    assert "`lambda_align` matters (vs base 0.0: -10.00 (> 0.14), 1.0: +4.00 (> 0.14))" in text
    assert "`rank_ratio` matters (vs base 0.5: -0.10 (<= 0.14), 0.25: -0.50 (> 0.14))" in text
    for name in ("s_rank_ratio", "s_lambda_align", "s_lr", "d_scale", "d_optimizer"):
        assert (tmp_path / "out" / "figures" / f"digits_{name}.png").stat().st_size > 1000
    base = table[table["method"] == "s-base"]
    assert (
        base_label(base, "lr", SWEEPS["s"]) == "base (0.001)"
    )  # the resolved recipe value, not "default"
    assert base_label(base.iloc[:0], "lr", SWEEPS["s"]) == "base (default)"


def test_one_seed_uses_the_stated_noise_floor(tmp_path):
    records = _records(
        tmp_path / "runs",
        {"bp": 90.0, "s-base": 80.0, "s-rank_ratio_0p5": 79.5, "s-rank_ratio_0p25": 79.6},
    )
    report(typed(records), SWEEPS, "digits", tmp_path / "out")
    text = (tmp_path / "out" / "findings.md").read_text()
    assert "no point has 2 seeds; a value matters when its difference exceeds 1 point" in text
    assert (
        "`rank_ratio` does not matter here (vs base 0.5: -0.50 (<= 1.00), 0.25: -0.40 (<= 1.00))"
        in text
    )


def test_a_one_seed_point_is_judged_by_the_pooled_noise_not_the_base_std_alone(tmp_path):
    """Issue 9's stage 2: a base with a small 3-seed std (0.1) made a 1-seed +0.44 look real."""
    points = sweep.points("s", SWEEPS["s"])
    seeds = {
        "s-base": [80.0, 80.1, 80.2],
        "s-lr_0p003": [70.0, 72.0, 74.0],
        "s-lambda_align_0p0": [80.54],
    }
    records = []
    for method, accs in seeds.items():
        for seed, acc in enumerate(accs):
            record = write_record(tmp_path / "runs", "mlp3", method, seed, acc, dataset="digits")
            record["impl"], record["options"] = "ssa", dict(points[method])
            record["options"].pop("lr", None)
            record["recipe"] = {"lr": points[method].get("lr", 0.001), "optimizer": "adamw"}
            records.append(record)
    report(typed(records), SWEEPS, "digits", tmp_path / "out")
    text = (tmp_path / "out" / "findings.md").read_text()
    # pooled std sqrt((2 * 0.01 + 2 * 4) / 4) = 1.42; 2 SE for 3 vs 1 seeds: 2 * 1.42 * sqrt(4/3) = 3.27, for 3 vs 3: 2.31
    assert "seed std 1.42 pooled over 2 multi-seed points" in text
    assert "`lambda_align` does not matter here (vs base 0.0: +0.44 (<= 3.27))" in text
    assert "`lr` matters (vs base 0.003: -8.10 (> 2.31))" in text


def test_pipeline_plans_a_sweep(tmp_path):
    import subprocess
    import sys

    overlay = tmp_path / "sweep.yaml"
    overlay.write_text(
        yaml.safe_dump(
            {
                "sweeps": SWEEPS,
                "sweep_datasets": ["digits"],
                "seeds": [0],
                "datasets": {"digits": {"archs": ["mlp3"], "methods": ["bp", "s", "d"]}},
            }
        )
    )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "-s",
            str(REPO / "Snakefile"),
            "-d",
            str(tmp_path),
            "-n",
            "-p",
            "--configfile",
            str(overlay),
            "--",
            "sweep",
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert "results/sweep/digits/findings.md" in done.stdout
    assert "--method s-lambda_align_1p0" in done.stdout and "--set lr=0.003" in done.stdout
    assert (
        f"--config {overlay}" in done.stdout
        or "--config " + str(overlay.relative_to(tmp_path)) in done.stdout
    )


def test_gap_to_bp_is_measured_on_the_same_network():
    table = pd.DataFrame(
        [
            {"method": "bp", "impl": "bp", "test_acc_mean": 50.0, "batchnorm": None},
            {"method": "b-batchnorm_true", "impl": "bp", "test_acc_mean": 60.0, "batchnorm": True},
            {"method": "s-base", "impl": "ssa", "test_acc_mean": 55.0, "batchnorm": True},
            {
                "method": "s-batchnorm_false",
                "impl": "ssa",
                "test_acc_mean": 45.0,
                "batchnorm": False,
            },
        ]
    )
    assert bp_reference(table, table.iloc[2])["method"] == "b-batchnorm_true"
    assert bp_reference(table, table.iloc[3])["method"] == "bp"
    assert bp_reference(table.drop(columns="batchnorm"), table.iloc[2])["method"] == "bp"


def test_a_base_point_without_a_finished_run_is_reported_not_compared(tmp_path):
    records = _records(
        tmp_path / "runs", {"bp": 90.0, "s-base": 80.0, "s-rank_ratio_0p5": 79.5}, seeds=(0, 1)
    )
    for record in records:
        if record["method"] == "s-base":
            record["status"] = "diverged"  # its last epoch's loss not finite (null)
            record["history"][-1]["train_loss"] = None
    report(typed(records), SWEEPS, "digits", tmp_path / "out")
    text = (tmp_path / "out" / "findings.md").read_text()
    assert (
        "sweep `s`: its base point has no finished run." in text
        and "nan" not in text.split("## Cost")[0]
    )


def test_a_one_option_grid_sweep_draws_its_points_and_bps_line_without_a_base(tmp_path):
    """A grid over one option (the K axis: modules 2, 4) runs no base point: its figure shows the points
    against the option and BP's accuracy as a dashed line, not "nothing to show"."""
    sweeps = {"k": {"impl": "dgl", "design": "grid", "options": {"modules": [2, 4]}}}
    records = []
    for method, acc in {"bp": 90.0, "k-modules_2": 80.0, "k-modules_4": 70.0}.items():
        record = write_record(tmp_path / "runs", "mlp3", method, 0, acc, dataset="digits")
        record["impl"] = "bp" if method == "bp" else "dgl"
        record["options"] = {} if method == "bp" else {"modules": int(method[-1])}
        record["recipe"] = {"lr": 0.001, "optimizer": "adamw"}
        records.append(record)
    report(typed(records), sweeps, "digits", tmp_path / "out")
    saved = pd.read_csv(tmp_path / "out" / "digits_sweep.csv").set_index("method")
    assert saved.loc["k-modules_4", "delta_to_bp"] == -20.0
    figure = sensitivity_figures(saved.reset_index(), sweeps, "digits", tmp_path / "fig")
    png = next(p for p in figure if p.suffix == ".png")
    assert png.stat().st_size > 5000  # a plot; "nothing to show" is a one-line text figure of ~3 kB
    one_option = {
        **sweeps["k"],
        "design": "one_at_a_time",
    }  # such a sweep needs its base: none here
    empty = sensitivity_figures(saved.reset_index(), {"k": one_option}, "digits", tmp_path / "e")
    assert next(p for p in empty if p.suffix == ".png").stat().st_size < png.stat().st_size
