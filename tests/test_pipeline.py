"""The pipeline: the config's grid and schema, dry runs of every target, bad config, and one real run."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from bench.config import grid
from bench.config.files import coerce_numbers, load_config
from bench.config.recipe import RECIPE
from bench.config.schema import load_schema, validate
from bench.config.spec import make_spec, parse_sets
from bench.layout import REPO
from bench.measure import declare
from bench.method import discover
from bench.report.figures import FIGURES
from bench.report.table import table_columns

SNAKEFILE = REPO / "Snakefile"
CONFIG = REPO / "config" / "config.yaml"


def snakemake(workdir: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run Snakemake on the suite's Snakefile with `workdir` as its working folder (results/ goes there)."""
    command = [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "-d", str(workdir), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)


# Typed values a config file may hold (no strings for non-string keys: Option.parse reads those as
# command-line text), around every bound and type of the recipe.
CANDIDATES = [True, False, None, -1, 0, 1, 2, 100, 255, 256, 10**6, -0.5, 0.5, 1.5, 254.5, 300.5]
CANDIDATES += [[], [0], [1], [-1], [0.5], [1.5], [256.5], [1, 2], [True], ["x"], {"a": 1}]


def _accepted_by_option(key: str, value) -> bool:
    try:
        RECIPE[key].parse(key, value)
    except ValueError:
        return False
    return True


def _accepted_by_schema(key: str, value) -> bool:
    recipe = {"datasets": {"digits": {"archs": ["mlp3"], "recipe": {key: value}}}}
    try:
        validate({"variants": {"bp": {"impl": "bp"}}, **recipe})
    except ValueError as error:
        assert f"config key datasets.digits.recipe.{key}" in str(error), error
        return False
    return True


def test_the_schema_recipe_block_is_the_trainers_recipe_key_by_key():
    committed = yaml.safe_load((REPO / "config" / "schema.yaml").read_text())
    assert "properties" not in committed["$defs"]["recipe"]  # declared once: in RECIPE
    generated = load_schema()["$defs"]["recipe"]
    assert list(generated["properties"]) == list(RECIPE) and not generated["additionalProperties"]
    for key, option in RECIPE.items():
        assert generated["properties"][key]["description"] == option.help
        strings = [option.default, *(option.choices or ()), "x", "auto", "none"]
        candidates = strings if isinstance(option.default, str) else CANDIDATES
        for value in [option.default, *candidates]:
            assert _accepted_by_schema(key, value) == _accepted_by_option(key, value), (key, value)
    with pytest.raises(ValueError, match=r"\('lr_max' was unexpected\); accepted keys: epochs, "):
        validate(
            {"variants": {}, "datasets": {"digits": {"archs": ["mlp3"], "recipe": {"lr_max": 1}}}}
        )


def test_the_data_layers_defaults_are_the_recipes():
    """DataOptions, Augment and BetonSpec keep defaults for callers without a recipe (bench.data.load,
    perf epoch): they must be RECIPE's, so that no run's data differs by how it was asked for."""
    from bench.data.options import DataOptions

    recipe = {key: option.default for key, option in RECIPE.items()}
    assert DataOptions.from_recipe(recipe) == DataOptions()


def test_config_default_grid_is_mnist5k_every_variant_three_seeds():
    grids = load_config([CONFIG]).grids
    assert set(grids) == {"mnist5k", "digits", "cifar10", "cifar100", "imagenet"}
    default = grids["mnist5k"]
    assert default.methods[:9] == (
        "bp",
        "dfa",
        "svd_bp",
        "ssa",
        "ssa-no_align",
        "ssa-no_orth",
        "ssa-ce_only",
        "ssa-fixed_rank",
        "ssa-spatial_map",
    )
    assert set(discover()) <= set(default.methods)
    assert (
        default.seeds == (0, 1, 2)
        and len(default.runs()) == len(default.archs) * len(default.methods) * 3
    )
    assert default.record_paths("r")[0] == "r/runs/mnist5k/smallconv/bp/seed0/record.json"


def test_grid_recipe_reaches_the_trainer_unchanged():
    g = grid.Grid(
        "digits", ("mlp3",), ("bp",), (0,), {"lr": 1e-05, "optimizer": "sgd", "epochs": 2}
    )
    assert g.set_args() == "--set lr=1.0e-05 --set optimizer=sgd --set epochs=2"
    sets = parse_sets([a for a in g.set_args().split() if a != "--set"])
    spec = make_spec("digits", "mlp3", "bp", 0, sets, {})
    assert (spec.recipe["lr"], spec.recipe["optimizer"], spec.recipe["epochs"]) == (1e-05, "sgd", 2)


def test_command_line_numbers_and_top_level_overrides():
    config = coerce_numbers(
        {
            "seeds": ["0", "3"],
            "epochs": "2",
            "variants": {"bp": {"impl": "bp"}},
            "datasets": {
                "digits": {
                    "archs": ["mlp3"],
                    "methods": ["bp"],
                    "recipe": {"lr": "0.01", "optimizer": "sgd"},
                },
                "mnist5k": {"archs": ["mlp3"], "seeds": [7]},
            },
        }
    )
    grids = grid.grids(validate(config))
    assert grids["digits"].seeds == (0, 3) and grids["mnist5k"].seeds == (7,)
    assert grids["digits"].recipe == {"lr": 0.01, "optimizer": "sgd", "epochs": 2}
    assert grids["mnist5k"].methods == tuple(
        grid.known_methods({"bp": {"impl": "bp"}})
    )  # default: all


@pytest.mark.parametrize(
    "change, key",
    [
        ({"epochs": -1}, "config key epochs"),
        ({"seeds": 3}, "config key seeds"),
        (
            {"datasets": {"digits": {"archs": ["mlp3"], "methods": ["dfaa"]}}},
            "config key datasets.digits.methods",
        ),
        (
            {"datasets": {"digits": {"archs": ["mlp3"], "recipe": {"lr": 0}}}},
            "config key datasets.digits.recipe.lr",
        ),
        ({"variants": {"x": {"impl": "ssa", "lambda_algn": 1}}}, "config key variants.x"),
    ],
)
def test_grid_refuses_bad_config_naming_the_key(change, key):
    config = yaml.safe_load(CONFIG.read_text()) | change
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        grid.grids(validate(config))


GRIDS = load_config(
    [CONFIG]
).grids  # job counts follow the config and the discovered method files, never typed in


def _runs(dataset: str) -> int:
    return len(GRIDS[dataset].runs())


@pytest.mark.parametrize(
    "targets, jobs",
    [
        (["all"], {"train": _runs("mnist5k"), "table": 1, "figures": 1}),
        (
            ["paper"],
            {
                "train": sum(_runs(d) for d in ("cifar10", "cifar100", "imagenet")),
                "paper_table": 3,
                "paper_figures": 3,
                "claims": 1,
                "table": None,
                "figures": None,
            },
        ),
        # every digits run, and the one cifar10 run the record target names
        (
            [
                "results/digits_table.csv",
                "results/figures/digits_rank.png",
                "results/runs/cifar10/vgg13/ssa/seed4/record.json",
            ],
            {"train": _runs("digits") + 1, "table": 1, "figures": 1},
        ),
    ],
)
def test_dry_run_plans_every_target(tmp_path, targets, jobs):
    done = snakemake(tmp_path, "-n", *targets, "--quiet", "rules")
    assert done.returncode == 0, done.stderr
    counts = {}
    for line in done.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            counts[parts[0]] = int(parts[1])
    assert {k: counts.get(k) for k in jobs} == jobs
    assert not (tmp_path / "results").exists()


def test_methods_all_is_every_variant_and_every_method_file():
    methods = GRIDS["mnist5k"].methods
    assert set(discover()) <= set(methods) and set(
        load_config([CONFIG], check_data=False).variants
    ) <= set(methods)
    assert len(methods) == len(set(methods))  # a method file that is also a variant is planned once


@pytest.mark.parametrize(
    "override, key",
    [
        ("datasets={digits: {archs: [mlp3], methods: [bp, dfaa]}}", "datasets.digits.methods"),
        (
            "paper_datasets=[cifar10, cifar10-jpeg]",
            "config key paper_datasets: dataset 'cifar10-jpeg' has no grid",
        ),
        ("epochs=-2", "epochs"),
        ("seeds=0", "seeds"),
    ],
)
def test_bad_config_fails_before_any_job(tmp_path, override, key):
    done = snakemake(tmp_path, "--cores", "1", "--config", override, "default_datasets=[digits]")
    assert done.returncode != 0
    assert key in done.stdout + done.stderr
    assert not (tmp_path / "results").exists()  # nothing ran


def test_a_new_method_file_joins_the_default_grid_and_the_suite_still_plans(tmp_path):
    methods = tmp_path / "methods"
    shutil.copytree(REPO / "methods", methods, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(
        methods / "template_rule.py", methods / "my_rule.py"
    )  # what the README tells a user to do
    env = os.environ | {"BENCH_METHODS_DIR": str(methods)}
    done = snakemake(
        tmp_path,
        "-n",
        "--config",
        "default_datasets=[digits]",
        "seeds=[0]",
        "--quiet",
        "rules",
        env=env,
    )
    assert done.returncode == 0, done.stderr
    planned = {
        line.split()[0]: int(line.split()[1])
        for line in done.stdout.splitlines()
        if len(line.split()) == 2 and line.split()[1].isdigit()
    }
    assert planned["train"] == _runs("digits") // len(GRIDS["digits"].seeds) + len(
        GRIDS["digits"].archs
    )
    listed = snakemake(
        tmp_path, "-n", "--config", "default_datasets=[digits]", "seeds=[0]", env=env
    )
    assert "results/runs/digits/mlp3/my_rule/seed0/record.json" in listed.stdout


def test_pipeline_end_to_end_on_digits(tmp_path):
    done = snakemake(
        tmp_path,
        "--cores",
        "2",
        "--config",
        "epochs=1",
        "seeds=[0]",
        "default_datasets=[digits]",
        "paper_datasets=[digits]",
        "datasets={digits: {archs: [mlp3], methods: [bp, ssa]}}",
        "--",
        "all",
        "paper",
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = tmp_path / "results"
    table = pd.read_csv(results / "digits_table.csv")
    # a real run records every declared measure and its auxiliary memory (0 without auxiliary modules):
    # each declared measure with a column, and the auxiliary column, are in the table
    declared = [m for m in declare.declared().values() if m.column]
    assert list(table.columns) == table_columns(declared, auxiliary=True)
    assert list(zip(table["arch"], table["method"])) == [("mlp3", "bp"), ("mlp3", "ssa")]
    assert (
        (table["n_ok"] == 1).all()
        and (table["status"] == "ok").all()
        and (table["epochs"] == 1).all()
    )
    assert table.loc[0, "delta_to_bp"] == 0.0
    assert (table["test_acc_mean"] > 30).all()  # one epoch on digits is far above chance (10%)
    assert (
        table.loc[1, "trainable_params"] > table.loc[0, "trainable_params"]
    )  # full-rank SSA stores U, s, V
    assert (
        table.loc[0, "feedback_params"] == 0 and table.loc[1, "feedback_params"] > 0
    )  # bp has no feedback
    assert "| mlp3 | ssa | 1/1 | 1 |" in (results / "digits_table.md").read_text()
    figures = sorted(p.name for p in (results / "figures").iterdir())
    assert figures == sorted(f"digits_{n}.{ext}" for n in FIGURES for ext in ("pdf", "png"))
    for log in ("train/digits/mlp3/ssa/seed0.log", "table/digits.log", "figures/digits.log"):
        assert (results / "logs" / log).stat().st_size > 0, log
    assert (results / "benchmarks" / "train" / "digits" / "mlp3" / "ssa" / "seed0.tsv").is_file()
    # `paper`: the same table and figures under results/paper/, and claims.md from the same records
    paper = results / "paper"
    assert pd.read_csv(paper / "digits_table.csv").equals(table)
    assert sorted(p.name for p in (paper / "figures").iterdir()) == figures
    claims = (paper / "claims.md").read_text()
    assert "Datasets checked: digits (2 records)" in claims
    assert "| 1. SSA reaches accuracy comparable to BP" in claims and "| digits | mlp3 |" in claims
    assert (
        "| 2. SSA trains fewer parameters than DFA" in claims and "**not run yet**" in claims
    )  # no dfa run


def test_cli_aggregate_with_config_lists_every_planned_row(tmp_path, capsys):
    from bench.cli import main

    args = [
        "aggregate",
        "--config",
        str(CONFIG),
        "--dataset",
        "digits",
        "--runs-dir",
        str(tmp_path / "runs"),
        "--out-dir",
        str(tmp_path),
    ]
    assert main(args) == 2 and "have no record" in capsys.readouterr().err
    assert main(args + ["--allow-missing", "--seeds", "0"]) == 0
    table = pd.read_csv(tmp_path / "digits_table.csv")
    expected = load_config([CONFIG]).grids["digits"]
    assert len(table) == len(expected.archs) * len(expected.methods)
    assert (table["status"] == "missing 1/1").all()
    assert main(["aggregate", "--config", str(CONFIG), "--dataset", "nope"]) == 2
    assert "has no grid" in capsys.readouterr().err
