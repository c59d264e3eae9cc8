"""The catalogue of bad inputs: each exits nonzero with a message naming the key or file and what is
accepted, and leaves no partial output behind (no run folder, no table, no file in the data directory)."""

from __future__ import annotations

import copy
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from bench.cli import main
from bench.config.files import load_config
from bench.layout import REPO
from bench.method import discover
from bench.models import ARCHS

CONFIG = REPO / "config" / "config.yaml"
TRAIN = {"--dataset": "digits", "--arch": "mlp3", "--method": "dfa", "--seed": "0"}


def train(tmp_path: Path, capsys, *sets: str, **flags: str) -> tuple[int, str, Path]:
    """`python -m bench train` in this process: (exit code, stderr, the --out folder)."""
    out = Path(flags.pop("out", tmp_path / "run"))
    args = TRAIN | {f"--{k.replace('_', '-')}": v for k, v in flags.items()}
    argv = ["train", *[x for kv in args.items() for x in kv], "--out", str(out)]
    argv += [x for pair in sets for x in ("--set", pair)]
    try:
        code = main(argv)
    except SystemExit as error:  # argparse's own errors (a type it cannot parse)
        code = error.code
    return code, capsys.readouterr().err, out


def files_under(folder: Path) -> dict[str, int]:
    return (
        {str(p.relative_to(folder)): p.stat().st_size for p in folder.rglob("*")}
        if folder.exists()
        else {}
    )


# ---- names, types and ranges on the command line -------------------------------------------------


@pytest.mark.parametrize(
    "flags, sets, message",
    [
        (
            {"dataset": "cifar7"},
            [],
            "unknown dataset 'cifar7'; known: cifar10, cifar100, digits, fashion_mnist, imagenet, mnist, mnist5k",
        ),
        ({"arch": "resnet9"}, [], "unknown arch 'resnet9'; known: " + ", ".join(sorted(ARCHS))),
        (
            {"method": "dfaa"},
            [],
            "unknown method 'dfaa'; known: "
            + ", ".join(sorted(set(discover()) | set(load_config(check_data=False).variants))),
        ),
        ({}, ["lambda_algn=1"], "unknown option 'lambda_algn'; recipe keys: epochs, batch_size"),
        ({}, ["epochs=0"], "bad value 0 for 'epochs'; accepted: int >= 1"),
        ({}, ["epochs=two"], "bad value 'two' for 'epochs'; accepted: int >= 1"),
        ({}, ["epochs=1.5"], "bad value 1.5 for 'epochs'; accepted: int >= 1"),
        ({}, ["lr=0"], "bad value 0.0 for 'lr'; accepted: float > 0.0"),
        ({}, ["lr=fast"], "bad value 'fast' for 'lr'; accepted: float > 0.0"),
        ({}, ["batch_size=0"], "bad value 0 for 'batch_size'; accepted: int >= 1"),
        ({}, ["batch_size=1.5"], "bad value 1.5 for 'batch_size'; accepted: int >= 1"),
        (
            {},
            ["batch_size=5000"],
            "'batch_size'; accepted: at most the 1437 training images of digits",
        ),
        (
            {},
            ["optimizer=lbfgs"],
            "bad value 'lbfgs' for 'optimizer'; accepted: one of sgd, adam, adamw",
        ),
        ({}, ["momentum=1.5"], "bad value 1.5 for 'momentum'; accepted: float >= 0.0 and <= 1.0"),
        ({}, ["epochs"], "bad --set 'epochs'; expected key=value"),
        (
            {"method": "ssa"},
            ["rank_ratio=1.5"],
            "bad value 1.5 for 'rank_ratio'; accepted: float > 0.0 and <= 1.0",
        ),
        (
            {"method": "ssa"},
            ["rank_ratio=0"],
            "bad value 0.0 for 'rank_ratio'; accepted: float > 0.0 and <= 1.0",
        ),
        (
            {"method": "ssa"},
            ["lambda_align=-1"],
            "bad value -1.0 for 'lambda_align'; accepted: float >= 0.0",
        ),
        (
            {"method": "ssa"},
            ["lambda_orth=lots"],
            "bad value 'lots' for 'lambda_orth'; accepted: float >= 0.0",
        ),
        (
            {"method": "ssa"},
            ["rank_epochs=x"],
            "bad value 'x' for 'rank_epochs'; accepted: a list of integers >= 1",
        ),
        ({"seed": "-3"}, [], "bad value -3 for 'seed'; accepted: an integer >= 0"),
        ({"seed": "x"}, [], "argument --seed: invalid int value: 'x'"),
    ],
)
def test_command_line_value(tmp_path, capsys, flags, sets, message):
    code, err, out = train(tmp_path, capsys, *sets, **flags)
    assert code == 2 and message in err
    assert not out.exists()


# ---- the pipeline config (validated as the Snakefile validates it) ------------------------------


def with_change(tmp_path: Path, key: str, value) -> Path:
    """config.yaml with the dotted `key` set to `value`, written to tmp_path/config.yaml."""
    config = copy.deepcopy(yaml.safe_load(CONFIG.read_text()))
    *parents, last = key.split(".")
    entry = config
    for part in parents:
        entry = entry.setdefault(part, {})
    entry[last] = value
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize(
    "key, value, message",
    [
        (
            "epoch",
            1,
            "config key (top level): Additional properties are not allowed ('epoch' was unexpected); "
            "accepted keys: results_dir, data_dir, seeds",
        ),
        (
            "datasets.digits.recipe.lr_max",
            1,
            "config key datasets.digits.recipe: Additional properties are not "
            "allowed ('lr_max' was unexpected); accepted keys: epochs, batch_size",
        ),
        (
            "datasets.cifar7",
            {"archs": ["mlp3"]},
            "config key datasets.cifar7: unknown dataset 'cifar7'; known: cifar10",
        ),
        (
            "datasets.digits.archs",
            ["resnet9"],
            "config key datasets.digits.archs: unknown arch 'resnet9'; known: "
            + ", ".join(sorted(ARCHS)),
        ),
        (
            "datasets.digits.methods",
            ["dfaa"],
            "config key datasets.digits.methods: unknown method 'dfaa'; known: all, bp",
        ),
        ("epochs", 0, "config key epochs: 0 is less than the minimum of 1"),
        ("seeds", [-1], "config key seeds.0: -1 is less than the minimum of 0"),
        (
            "datasets.digits.recipe.lr",
            "fast",
            "config key datasets.digits.recipe.lr: 'fast' is not of type 'number'",
        ),
        (
            "datasets.digits.recipe.batch_size",
            0,
            "config key datasets.digits.recipe.batch_size: 0 is less than the minimum of 1",
        ),
        (
            "variants.x",
            {"impl": "ssa", "lambda_align": -1},
            "config key variants.x: bad value -1.0 for 'lambda_align'; accepted: float >= 0.0",
        ),
        (
            "variants.x",
            {"impl": "ssa", "rank_ratio": 2},
            "config key variants.x: bad value 2.0 for 'rank_ratio'; "
            "accepted: float > 0.0 and <= 1.0",
        ),
        (
            "variants.x",
            {"impl": "ssaa"},
            "config key variants.x: unknown method 'ssaa'; known: " + ", ".join(sorted(discover())),
        ),
        (
            "datasets.digits.method_recipe.bpp",
            {"lr": 1},
            "config key datasets.digits.method_recipe: unknown method 'bpp'",
        ),
    ],
)
def test_config_value(tmp_path, capsys, key, value, message):
    out = tmp_path / "tables"
    code = main(
        [
            "aggregate",
            "--config",
            str(with_change(tmp_path, key, value)),
            "--dataset",
            "digits",
            "--runs-dir",
            str(tmp_path / "runs"),
            "--out-dir",
            str(out),
        ]
    )
    assert code == 2 and message in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(
    "text, message",
    [
        ("variants: {bp: {impl: bp}\n", "is not readable YAML"),
        (None, "not found"),
    ],
)
def test_config_file_unreadable_or_missing(tmp_path, capsys, text, message):
    path = tmp_path / "config.yaml"
    if text is not None:
        path.write_text(text)
    code, err, out = train(tmp_path, capsys, config=str(path))
    assert code == 2 and f"config file {path}" in err and message in err
    assert not out.exists()


def test_pipeline_refuses_an_unknown_arch_before_any_job(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "-s",
            str(REPO / "Snakefile"),
            "-d",
            str(tmp_path),
            "--cores",
            "1",
            "--config",
            "default_datasets=[digits]",
            "datasets={digits: {archs: [mlp3, resnet9]}}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode != 0
    assert (
        "config key datasets.digits.archs: unknown arch 'resnet9'; known: "
        + ", ".join(sorted(ARCHS))
        in done.stdout + done.stderr
    )
    assert not (tmp_path / "results").exists()


# ---- data ---------------------------------------------------------------------------------------


def image_tree(root: Path, classes=("a", "b"), per_class: int = 2, size: int = 8) -> Path:
    """root/{train,test}/<class>/<n>.png, small random RGB images."""
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for name in classes:
            (root / split / name).mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / name / f"{i}.png")
    return root


def train_on_data(tmp_path, capsys, dataset: str, data_dir: Path) -> tuple[str, Path]:
    """Train on broken data: exit 2, no run folder, nothing added to or removed from the data directory."""
    before = files_under(data_dir)
    code, err, out = train(tmp_path, capsys, "epochs=1", dataset=dataset, data_dir=str(data_dir))
    assert code == 2, err
    assert not out.exists() and files_under(data_dir) == before
    return err, out


def test_missing_data_directory_names_the_folder_it_looked_for(tmp_path, capsys):
    err, _ = train_on_data(tmp_path, capsys, "mytree", tmp_path / "no-data")
    assert (
        "unknown dataset 'mytree'; known: cifar10" in err
        and str(tmp_path / "no-data" / "mytree" / "train") in err
    )


def test_missing_cifar_directory_says_where_files_go_and_leaves_no_folder(
    tmp_path, capsys, monkeypatch
):
    import torchvision

    def offline(*args, **kwargs):
        raise RuntimeError("network unreachable")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    data_dir = tmp_path / "no-data" / "deeper"
    code, err, out = train(tmp_path, capsys, dataset="cifar10", data_dir=str(data_dir))
    assert code == 2 and f"cifar10 needs {data_dir / 'cifar-10-batches-py' / 'data_batch_1'}" in err
    assert "cifar-10-python.tar.gz" in err and "network unreachable" in err
    assert not (tmp_path / "no-data").exists() and not out.exists()


def test_empty_class_folder_is_named(tmp_path, capsys):
    tree = image_tree(tmp_path / "data" / "toy")
    for image in (tree / "train" / "b").iterdir():
        image.unlink()
    err, _ = train_on_data(tmp_path, capsys, "toy", tmp_path / "data")
    assert (
        f"class folder {tree / 'train' / 'b'} is empty; every class needs at least one image" in err
    )


def test_corrupt_image_is_named(tmp_path, capsys):
    tree = image_tree(tmp_path / "data" / "toy")
    (tree / "test" / "a" / "1.png").write_bytes(b"\x89PNG but not really")
    err, _ = train_on_data(tmp_path, capsys, "toy", tmp_path / "data")
    assert f"cannot decode image {tree / 'test' / 'a' / '1.png'}" in err


def test_image_folder_without_an_evaluation_split_is_named(tmp_path, capsys):
    tree = image_tree(tmp_path / "data" / "toy")
    (tree / "test").rename(tree / "testing")
    err, _ = train_on_data(tmp_path, capsys, "toy", tmp_path / "data")
    assert f"image folder {tree} has no test/ or val/ folder; expected test/<class>/<image>" in err


def write_cifar10(root: Path, data: np.ndarray | None = None) -> Path:
    """cifar-10-batches-py/ in torchvision's layout, 4 random images a batch; `data` replaces batch 2's."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        entry = {"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), "labels": [0, 1, 2, 3]}
        if name == "data_batch_2" and data is not None:
            entry["data"] = data
        (folder / name).write_bytes(pickle.dumps(entry, protocol=2))
    (folder / "batches.meta").write_bytes(
        pickle.dumps({"label_names": [f"c{i}" for i in range(10)]}, protocol=2)
    )
    return folder


@pytest.mark.parametrize(
    "case, message",
    [
        (
            "wrong shape",
            "data_batch_2: 'data' has shape (4, 1024) and 4 labels; expected N x 3072 uint8 and N labels",
        ),
        ("not a pickle", "data_batch_2 is not a CIFAR pickle"),
        ("a pickle of code", "data_batch_2 is not a CIFAR pickle: refusing to load posix.system"),
    ],
)
def test_bad_cifar_file_is_named(tmp_path, capsys, case, message):
    data_dir = tmp_path / "data"
    folder = write_cifar10(
        data_dir, np.zeros((4, 1024), np.uint8) if case == "wrong shape" else None
    )
    if case == "not a pickle":
        (folder / "data_batch_2").write_bytes(b"GIF89a" + bytes(200))
    elif case == "a pickle of code":
        (folder / "data_batch_2").write_bytes(
            pickle.dumps({"data": os.system, "labels": []}, protocol=2)
        )
    err, _ = train_on_data(tmp_path, capsys, "cifar10", data_dir)
    assert message in err


def _ffcv() -> bool:
    from bench.data.ffcv_loader import ffcv_available

    return ffcv_available()


@pytest.fixture(scope="module")
def beton(tmp_path_factory) -> bytes:
    """The bytes of a small whole imagenet .beton (train split, the recipe's default beton settings)."""
    if not _ffcv():
        pytest.skip("ffcv not installed (scripts/install_system_deps.sh)")
    from bench.data import BetonSpec
    from bench.data.beton.write import TEST_PAGE_SIZE, write_split

    root = tmp_path_factory.mktemp("beton")
    image_tree(root / "imagenet", per_class=3)
    return write_split(
        "imagenet", root, "train", BetonSpec(), workers=1, page_size=TEST_PAGE_SIZE
    ).read_bytes()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize(
    "case, message",
    [
        ("truncated", "is truncated"),
        ("wrong magic", "is not a .beton of format"),
    ],
)
def test_bad_beton_is_named(tmp_path, capsys, beton, case, message):
    folder = tmp_path / "data" / "ffcv" / "imagenet"
    folder.mkdir(parents=True)
    train_path = folder / "train_500_0.50_90.beton"
    train_path.write_bytes(
        beton[: len(beton) // 2] if case == "truncated" else b"\x7fELF" + bytes(len(beton) - 4)
    )
    (folder / "val_500_0.50_90.beton").write_bytes(beton)
    err, _ = train_on_data(tmp_path, capsys, "imagenet", tmp_path / "data")
    assert f"{train_path} {message}" in err


# ---- output folders -----------------------------------------------------------------------------


def test_out_pointing_at_a_file_is_refused(tmp_path, capsys):
    target = tmp_path / "record.json"
    target.write_text("keep")
    code, err, _ = train(tmp_path, capsys, out=str(target))
    assert code == 2 and f"--out {target}: {target} is a file; give a folder for the run" in err
    assert target.read_text() == "keep"


def unwritable_folder(tmp_path: Path) -> Path:
    """A folder this process cannot create anything in (root ignores mode bits: then /sys, which refuses)."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    for candidate in (folder, Path("/sys")):
        try:
            (candidate / "probe").mkdir()
        except OSError:
            return candidate
        (candidate / "probe").rmdir()
    pytest.skip("no folder here refuses writes")


def test_unwritable_output_folder_for_a_run(tmp_path, capsys):
    out = unwritable_folder(tmp_path) / "run"
    code, err, _ = train(tmp_path, capsys, "epochs=1", out=str(out))
    assert code == 2 and str(out) in err and "writable" in err
    assert not out.exists()


@pytest.mark.parametrize("where", ["a file", "unwritable"])
def test_bad_table_folder_is_named(tmp_path, capsys, where):
    from synthetic_records import write_record

    write_record(tmp_path / "runs", "mlp", "bp", 0, 90.0)
    if where == "a file":
        blocking = tmp_path / "tables"
        blocking.write_text("keep")
        out, message = (
            blocking / "sub",
            f"output folder {blocking / 'sub'}: {blocking} is a file; give a folder",
        )
    else:
        out = unwritable_folder(tmp_path) / "tables"
        message = f"output folder {out} is not writable"
    code = main(
        [
            "aggregate",
            "--runs-dir",
            str(tmp_path / "runs"),
            "--dataset",
            "toy",
            "--out-dir",
            str(out),
        ]
    )
    assert code == 2 and message in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(
    "overrides, key",
    [
        ({"datasets": "foo"}, "config key datasets: 'foo' is not of type 'object'"),
        ({"datasets": {"digits": "3"}}, "config key datasets.digits: '3'"),
        ({"datasets": {"digits": {"method_recipe": ["1"]}}}, "datasets.digits.method_recipe"),
    ],
)
def test_a_command_line_value_of_the_wrong_shape_is_named_by_the_schema(overrides, key):
    # Snakemake's --config values reach the loader as text; the number coercion before the schema must
    # leave a wrong shape for the schema to name, not fail on it
    with pytest.raises(ValueError, match=re.escape(key)):
        load_config(overrides=overrides)
