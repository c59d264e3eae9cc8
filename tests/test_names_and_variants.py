"""Names and variants: one resolution of a variant (options and recipe keys) for every entry point, one
rule for names, and a broken method file refused only where it is used (issue 26, classes 5, 6, 7, 9)."""

import json
import os
import shlex
import shutil
import subprocess
import sys

import pytest
import yaml

from bench.cli import main
from bench.config import grid, names, sweep
from bench.config.files import load_config
from bench.config.schema import validate
from bench.config.spec import make_spec, parse_sets
from bench.layout import REPO
from bench.method import broken_methods, discover
from bench.models import ARCHS

CONFIG = REPO / "config" / "config.yaml"
# Every grid of config/config.yaml names only these, so that an overlay plans no `methods: all`.
ONLY_BP = {name: {"methods": ["bp"]} for name in ("mnist5k", "digits", "cifar10", "cifar100")}


def overlay(tmp_path, **config) -> str:
    path = tmp_path / "overlay.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def spec_as_planned(config, dataset: str, method: str):
    """The spec of `method`'s run as the Snakefile plans it: the grid's --set arguments to the trainer,
    which reads the variants from the same files."""
    sets = shlex.split(config.grids[dataset].set_args(method))[1::2]
    variants = load_config(config.files[1:], check_data=False).variants
    return make_spec(dataset, "mlp3", method, 0, parse_sets(sets), variants)


# -- class 5: one resolution of a variant, options and recipe keys ------------------------------------

LR_SWEEP = {"lrs": {"impl": "bp", "options": {"lr": [1e-05]}}}


def test_a_sweep_points_recipe_keys_reach_the_trainer_list_and_the_plan(tmp_path, capsys):
    files = overlay(tmp_path, sweeps=LR_SWEEP, datasets={"digits": {"methods": ["lrs"]}})
    # `bench train` and `bench grid` (which runs `bench train`): the point's own lr, not the default
    variants = load_config([files], check_data=False).variants
    assert make_spec("digits", "mlp3", "lrs-lr_1em05", 0, {}, variants).recipe["lr"] == 1e-05
    assert make_spec("digits", "mlp3", "lrs-base", 0, {}, variants).recipe["lr"] == 1e-03
    # the Snakefile: the same spec from its --set arguments
    planned = spec_as_planned(load_config([files]), "digits", "lrs-lr_1em05")
    assert planned.recipe["lr"] == 1e-05
    # `bench list` shows the points as the different runs they are
    assert main(["list", "--config", files]) == 0
    lines = {line.split(":")[0]: line for line in capsys.readouterr().out.splitlines()}
    assert lines["variant lrs-lr_1em05"].endswith("{'impl': 'bp', 'lr': 1e-05}")
    assert lines["variant lrs-base"].endswith("{'impl': 'bp'}")


def test_the_cli_trains_a_sweep_point_with_its_recipe(tmp_path):
    files = overlay(tmp_path, sweeps=LR_SWEEP)
    out = tmp_path / "run"
    args = ["train", "--dataset", "digits", "--arch", "mlp3", "--method", "lrs-lr_1em05"]
    args += ["--set", "epochs=1", "--set", "attack_subset=0", "--config", files, "--out", str(out)]
    assert main(args) == 0
    record = json.loads((out / "record.json").read_text())
    assert record["method"] == "lrs-lr_1em05" and record["recipe"]["lr"] == 1e-05


def test_a_variant_may_hold_recipe_keys_with_a_stated_precedence(tmp_path):
    # RECIPE < dataset recipe < method_recipe of the file < the variant's keys < method_recipe of the
    # variant < --set
    variants = {"bp-slow": {"impl": "bp", "lr": 1e-04}, "bp-slow_sgd": {"impl": "bp", "lr": 1e-04}}
    datasets = {
        "digits": {
            "methods": ["bp", "bp-slow", "bp-slow_sgd"],
            "recipe": {"lr": 0.002, "epochs": 1},
            "method_recipe": {
                "bp": {"lr": 0.003},
                "bp-slow_sgd": {"lr": 0.005, "optimizer": "sgd"},
            },
        }
    }
    config = load_config([overlay(tmp_path, variants=variants, datasets=datasets)])
    assert spec_as_planned(config, "digits", "bp").recipe["lr"] == 0.003
    assert spec_as_planned(config, "digits", "bp-slow").recipe["lr"] == 1e-04
    slow_sgd = spec_as_planned(config, "digits", "bp-slow_sgd").recipe
    assert slow_sgd["lr"] == 0.005 and slow_sgd["optimizer"] == "sgd"
    assert make_spec("digits", "mlp3", "bp-slow", 0, {"lr": "0.01"}, variants).recipe["lr"] == 0.01
    assert grid.variant_definition("bp-slow", variants) == '{"impl": "bp"}'  # recipe: --set


def test_methods_all_does_not_take_sweep_points(tmp_path):
    config = load_config([overlay(tmp_path, sweeps=LR_SWEEP)])
    assert "lrs-lr_1em05" in config.variants
    assert not any(m.startswith("lrs-") for m in config.grids["digits"].methods)
    assert "bp" in config.grids["digits"].methods


def test_a_recipe_key_in_a_variant_is_checked_as_a_recipe_key(tmp_path):
    files = overlay(tmp_path, variants={"bp-fast": {"impl": "bp", "lr": -1.0}})
    with pytest.raises(ValueError, match=r"variants\.bp-fast: bad value -1\.0 for 'lr'"):
        load_config([files])


@pytest.mark.parametrize(
    "recipe,methods,message",
    [
        (
            {"grad_clip": 1.0},
            ["bp", "ssa"],
            r"recipe \(method ssa\): bad value 1\.0 for 'grad_clip'",
        ),
        ({"locality": "blockwise"}, ["dgl", "fa"], r"recipe \(method fa\): bad value 'blockwise'"),
    ],
)
def test_a_dataset_recipe_one_of_its_methods_refuses_stops_the_plan(
    tmp_path, recipe, methods, message
):
    """Every method of a grid is checked with the dataset's recipe, not only the first: a key one rule
    refuses stops the plan naming that rule, instead of failing its jobs once the others trained."""
    files = overlay(
        tmp_path, datasets={**ONLY_BP, "digits": {"methods": methods, "recipe": recipe}}
    )
    with pytest.raises(ValueError, match=r"config key datasets\.digits\." + message):
        load_config([files], check_data=False)


# -- class 6: one rule for names ----------------------------------------------------------------------

BAD_NAMES = ["Bp", "bp slow", "bp/x", "-bp", "bp--x", "bp-", "bp.x", "x" * 65, "all", "é"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_a_bad_variant_name_is_refused_naming_the_rule(tmp_path, name):
    with pytest.raises(ValueError, match="accepted: lowercase letters, digits and _"):
        load_config([overlay(tmp_path, variants={name: {"impl": "bp"}})])
    # the same without jsonschema (the lent GPU machine): the rule is checked in bench/config/grid.py too
    with pytest.raises(ValueError, match=r"config key variants\..*accepted: lowercase"):
        grid.grids({"variants": {name: {"impl": "bp"}}, "datasets": {}})


def test_the_name_rule_admits_every_name_in_use():
    for path in (REPO / "config").glob("*.yaml"):
        if path.name == "schema.yaml":
            continue
        config = load_config([path], check_data=False)
        for name in [*config.variants, *config.sweeps, *ARCHS, *discover()]:
            assert names.problem(name) is None, (path, name)
    assert names.problem("x" * 64) is None and names.problem("ssa_design-lr_0p003") is None


def test_a_variant_named_like_a_method_file_must_run_that_file(tmp_path):
    with pytest.raises(ValueError, match=r"variants\.fa: a variant named like the method file"):
        load_config([overlay(tmp_path, variants={"fa": {"impl": "ssa"}})])
    # the file itself with its own options: allowed, it sets them for this config
    config = load_config([overlay(tmp_path, variants={"fa": {"impl": "fa", "scale": 2.0}})])
    assert config.variants["fa"] == {"impl": "fa", "scale": 2.0}


@pytest.mark.parametrize(
    "sweeps, message",
    [
        ({"fa": {"impl": "dfa", "options": {"scale": [0.5]}}}, r"sweeps\.fa: a method file"),
        ({"all": {"impl": "dfa", "options": {"scale": [0.5]}}}, r"sweeps\.all: bad name"),
        ({"s" * 55: {"impl": "dfa", "options": {"scale": [0.5]}}}, "its point: bad name"),
        ({"Sw": {"impl": "dfa", "options": {"scale": [0.5]}}}, r"sweeps: bad value 'Sw'|Sw: bad"),
    ],
)
def test_a_sweep_or_point_name_that_means_two_things_is_refused(tmp_path, sweeps, message):
    with pytest.raises(ValueError, match=message):
        load_config([overlay(tmp_path, sweeps=sweeps)])
    with pytest.raises(ValueError, match=message.split("|")[-1]):
        sweep.expand({"sweeps": sweeps, "variants": {}})  # no schema: the same rule


@pytest.mark.parametrize("stem", ["all", "My_rule", "my rule", "my.rule", "r" * 65])
def test_a_method_file_with_a_bad_name_is_not_discovered(tmp_path, stem):
    shutil.copy(REPO / "methods" / "bp.py", tmp_path / "bp.py")
    shutil.copy(REPO / "methods" / "bp.py", tmp_path / f"{stem}.py")
    assert list(discover(tmp_path)) == ["bp"]
    assert "its name is no method name" in broken_methods(tmp_path)[stem]


# -- class 7: a broken method file is refused only where it is used -----------------------------------

BROKEN = {
    "syntax": "from bench import Method\n\nclass Syntax(Method)\n    pass\n",
    "twice": "from bench import Method\n\n\nclass A(Method):\n    pass\n\n\nclass B(Method):\n    pass\n",
    "imports": "from bench import Method\nimport no_such_module_anywhere\n",
    "exits": "import sys\n\nsys.exit(3)\n",
}
LINES = {"syntax": "line 3", "twice": "found 2", "imports": "line 2", "exits": "line 3"}


@pytest.fixture
def broken_dir(tmp_path, monkeypatch):
    """The repository's methods plus one broken file of each kind, as $BENCH_METHODS_DIR."""
    methods = tmp_path / "methods"
    shutil.copytree(REPO / "methods", methods, ignore=shutil.ignore_patterns("__pycache__"))
    for stem, text in BROKEN.items():
        (methods / f"{stem}.py").write_text(text)
    monkeypatch.setenv("BENCH_METHODS_DIR", str(methods))
    return methods


def test_discovery_keeps_broken_files_aside_with_their_reason(broken_dir):
    assert set(discover()) == set(discover(REPO / "methods")) and "bp" in discover()
    broken = broken_methods()
    assert set(broken) == set(BROKEN)
    for stem, where in LINES.items():
        assert str(broken_dir / f"{stem}.py") in broken[stem] and where in broken[stem], broken[
            stem
        ]


def test_list_shows_the_others_and_names_the_broken_files(broken_dir, capsys):
    assert main(["list"]) == 1
    out = capsys.readouterr().out
    assert "method bp:" in out and "variant ssa-no_align" in out
    for stem in BROKEN:
        assert f"broken method {stem}: method file {broken_dir / stem}.py is broken" in out


def test_train_refuses_only_the_broken_rule(broken_dir, capsys):
    variants = load_config(check_data=False).variants
    assert make_spec("digits", "mlp3", "bp", 0, {}, variants).impl == "bp"
    args = ["train", "--dataset", "digits", "--arch", "mlp3", "--method", "syntax"]
    assert main([*args, "--out", str(broken_dir.parent / "run")]) == 2
    error = capsys.readouterr().err
    assert f"{broken_dir / 'syntax.py'} is broken: SyntaxError" in error and "line 3" in error
    assert "Traceback" not in error and not (broken_dir.parent / "run").exists()


def test_a_grid_that_plans_a_broken_rule_is_refused_and_no_other(broken_dir, tmp_path):
    with pytest.raises(
        ValueError, match=r"datasets\.mnist5k\.methods: 'exits' runs a broken rule: method file"
    ):
        load_config(None, plan=True)  # methods: all takes every file
    load_config([overlay(tmp_path, datasets=ONLY_BP)], plan=True)
    sweeps = {"syn": {"impl": "syntax", "options": {"lr": [0.01]}}}
    files = overlay(tmp_path, datasets=ONLY_BP | {"digits": {"methods": ["syn"]}}, sweeps=sweeps)
    assert "syn-lr_0p01" in load_config([files]).variants  # a run of another rule may read it
    with pytest.raises(
        ValueError, match=r"datasets\.digits\.methods: 'syn-base' runs a broken rule"
    ):
        load_config([files], plan=True)


def test_snakemake_names_the_broken_file_in_one_line(broken_dir, tmp_path):
    command = [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(REPO / "Snakefile"),
        "-d",
        str(tmp_path),
    ]
    done = subprocess.run(
        [*command, "-n", "--config", "default_datasets=[digits]"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert done.returncode == 2, done.stderr
    assert "error: config key datasets." in done.stderr and "is broken" in done.stderr
    assert "Traceback" not in done.stderr


# -- class 9: the recipe's cross-key checks -----------------------------------------------------------


@pytest.mark.parametrize("milestones", [[2, 2], [3, 1], [1, 4, 4]])
def test_repeated_or_unordered_milestones_are_refused(milestones):
    sets = {"schedule": "multistep", "milestones": milestones}
    with pytest.raises(
        ValueError, match=r"for 'milestones'; accepted: distinct epochs in increasing"
    ):
        make_spec("digits", "mlp3", "bp", 0, sets, {})
    with pytest.raises(ValueError, match=r"datasets\.digits\.recipe: bad value"):
        validate_and_plan({"datasets": {"digits": {"archs": ["mlp3"], "recipe": sets}}})


def test_increasing_milestones_are_kept():
    sets = {"schedule": "multistep", "milestones": [1, 3]}
    assert make_spec("digits", "mlp3", "bp", 0, sets, {}).recipe["milestones"] == [1, 3]


def validate_and_plan(config: dict) -> dict:
    return grid.grids(validate({"variants": {"bp": {"impl": "bp"}}, **config}), check_data=False)
