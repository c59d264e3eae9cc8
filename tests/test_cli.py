"""The command line: training writes a record; bad input exits 2, names what is accepted, writes nothing."""

import json
import subprocess
import sys

import pytest

from bench.cli import main
from bench.config.files import load_config
from bench.layout import REPO
from bench.method import discover
from bench.models import ARCHS

BASE = ["train", "--dataset", "digits", "--arch", "mlp3", "--method", "dfa", "--seed", "0"]


def test_train_writes_record_and_log(tmp_path, capsys):
    out = tmp_path / "run"
    assert (
        main(
            [*BASE, "--out", str(out), "--set", "epochs=1", "--set", "lr=3e-3", "--set", "scale=2"]
        )
        == 0
    )
    record = json.loads((out / "record.json").read_text())
    assert record["recipe"]["lr"] == 0.003 and record["options"]["scale"] == 2.0
    assert (out / "log.csv").is_file()


@pytest.mark.parametrize(
    "args,message",
    [
        (["--dataset", "cifar7"], "unknown dataset 'cifar7'; known: "),
        (["--arch", "resnet9"], "unknown arch 'resnet9'; known: " + ", ".join(sorted(ARCHS))),
        (
            ["--method", "dfaa"],
            "unknown method 'dfaa'; known: "
            + ", ".join(sorted(set(discover()) | set(load_config(check_data=False).variants))),
        ),
        (["--set", "lambda_algn=1"], "unknown option 'lambda_algn'"),
        (["--set", "epochs=-1"], "bad value -1 for 'epochs'; accepted: int >= 1"),
        (["--set", "epochs=two"], "bad value 'two' for 'epochs'"),
        (["--set", "lr=0"], "'lr'; accepted: float > 0.0"),
        (["--set", "batch_size=1.5"], "'batch_size'"),
        (["--set", "optimizer=lbfgs"], "one of sgd, adam, adamw"),
        (["--set", "scale=-1"], "'scale'; accepted: float >= 0.0"),
        (["--set", "epochs"], "bad --set 'epochs'; expected key=value"),
        (
            ["--method", "ssa", "--set", "rank_ratio=1.5"],
            "'rank_ratio'; accepted: float > 0.0 and <= 1.0",
        ),
        (
            ["--method", "ssa", "--set", "rank_epochs=3"],
            "'rank_epochs'; accepted: a list of integers",
        ),
    ],
)
def test_bad_input_exits_2_naming_what_is_accepted(args, message, tmp_path, capsys):
    argv = dict(zip(BASE[1::2], BASE[2::2]))
    for flag, value in zip(args[0::2], args[1::2]):
        if flag != "--set":
            argv[flag] = value
    flat = ["train", *[x for kv in argv.items() for x in kv]]
    flat += [
        x for flag, value in zip(args[0::2], args[1::2]) if flag == "--set" for x in (flag, value)
    ]
    out = tmp_path / "run"
    assert main([*flat, "--out", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_out_pointing_at_a_file_is_refused(tmp_path, capsys):
    target = tmp_path / "file"
    target.write_text("keep")
    assert main([*BASE, "--out", str(target)]) == 2
    assert "is a file" in capsys.readouterr().err and target.read_text() == "keep"


def test_exit_code_from_a_real_process(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "bench", *BASE[:-1], "-3", "--out", str(tmp_path / "r")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and "'seed'" in result.stderr


def test_list_shows_the_variants_and_sweep_points_of_its_config_files(capsys):
    sweep = str(REPO / "config" / "sweep_ssa.yaml")
    assert main(["list", "--config", str(REPO / "config" / "config.yaml"), "--config", sweep]) == 0
    out = capsys.readouterr().out
    assert "variant ssa-no_align: " in out  # the first file's
    assert (
        "variant ssa_design-base: {'impl': 'ssa', 'rank_epochs': [1]" in out
    )  # the second's sweeps
    assert "variant ssa_fixed_rank-rank_ratio_0p25: " in out
    assert (
        main(["list", "--config", sweep]) == 0
    )  # merged on top of config/config.yaml, as Snakemake
    assert capsys.readouterr().out == out
    assert main(["list", "--config", str(REPO / "nope.yaml")]) == 2
    refused = capsys.readouterr()
    assert "nope.yaml not found" in refused.err and refused.out == ""  # no half listing


def test_list_names_datasets_archs_methods_and_variants(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ["mnist5k", "smallconv", "method ssa", "variant ssa-no_align"]:
        assert name in out
    # every option of every rule, and every recipe key, with its default, what is accepted, and its help
    assert "  lambda_align = 0.1  [float >= 0.0]  weight of L_align" in out
    assert "  feedback = 'broadcast'  [one of broadcast, spatial_map, full]" in out
    assert "  rank_ratio = 1.0  [float > 0.0 and <= 1.0]" in out
    assert "  val_split = 0  [int >= 0]  training images held out" in out
    for name, cls in discover().items():
        assert f"method {name}:" in out
        assert all(
            f"  {key} = {opt.default!r}  [{opt.accepted()}]  {opt.help}" in out
            for key, opt in cls.options.items()
        )


def test_out_below_a_file_and_broken_config_are_refused(tmp_path, capsys):
    (tmp_path / "file").write_text("keep")
    assert main([*BASE, "--out", str(tmp_path / "file" / "run")]) == 2
    assert "is a file" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    for text, message in [
        ("variants: [bp", "not readable YAML"),
        ("variants: [bp]", "config key variants"),
        ("variants: {x: bp}", "config key variants.x"),
    ]:
        bad.write_text(text)
        assert main([*BASE, "--out", str(tmp_path / "r"), "--config", str(bad)]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_batch_larger_than_the_training_set_is_refused(tmp_path, capsys):
    assert main([*BASE, "--out", str(tmp_path / "r"), "--set", "batch_size=5000"]) == 2
    assert (
        "'batch_size'; accepted: at most the 1437 training images of digits"
        in capsys.readouterr().err
    )
    assert not (tmp_path / "r").exists()
