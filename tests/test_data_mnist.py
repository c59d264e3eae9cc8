"""MNIST and Fashion-MNIST in torchvision's on-disk IDX layout: tiny files written here in the official
format (magic numbers, big-endian dimensions) load through the real path; damaged ones are refused naming
the file; an absent set is downloaded through torchvision, or the error says where the files go."""

import gzip
import json
import struct

import numpy as np
import pytest
import torch
import torchvision

from bench.cli import main
from bench.data import load

NAMES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def idx(array: np.ndarray) -> bytes:
    """`array` (uint8) as an IDX file: 0x0000, type 0x08, its dimensions, then big-endian uint32 sizes."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_mnist(root, folder="MNIST", train=40, test=20, gz=False, seed=0):
    """torchvision's <folder>/raw/ with random 28x28 digits; returns {split: (images, labels)}."""
    rng, raw, written = np.random.default_rng(seed), root / folder / "raw", {}
    raw.mkdir(parents=True)
    for split, n in (("train", train), ("test", test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        for name, array in zip(NAMES[split], (images, labels)):
            data = idx(array)
            (raw / (name + ".gz" if gz else name)).write_bytes(gzip.compress(data) if gz else data)
        written[split] = (images, labels)
    return written


@pytest.mark.parametrize(
    ("name", "folder"), [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")]
)
@pytest.mark.parametrize("gz", [False, True])
def test_idx_files_load_pixel_for_pixel(tmp_path, name, folder, gz):
    written = write_mnist(tmp_path, folder, gz=gz)
    data = load(name, data_dir=tmp_path)
    assert data.name == name and data.in_shape == (1, 28, 28) and data.num_classes == 10
    assert torch.equal(data.train_x[:, 0], torch.from_numpy(written["train"][0]))
    assert torch.equal(data.test_y, torch.from_numpy(written["test"][1]).long())
    assert data.train_x.dtype == torch.uint8 and data.train_y.dtype == torch.int64
    pixels = torch.from_numpy(written["train"][0]).float() / 255
    assert data.mean.item() == pytest.approx(pixels.mean().item(), rel=1e-5)  # training split's
    if name == "fashion_mnist":
        assert data.classes[0] == "T-shirt/top" and data.classes[9] == "Ankle boot"


def test_unpacked_file_wins_over_its_gz(tmp_path):
    written = write_mnist(tmp_path)
    raw = tmp_path / "MNIST" / "raw"
    (raw / "train-labels-idx1-ubyte.gz").write_bytes(b"not gzip at all")  # never read
    assert torch.equal(
        load("mnist", data_dir=tmp_path).train_y, torch.tensor(written["train"][1]).long()
    )


def _damage(raw, name, data: bytes):
    for path in raw.glob(name + "*"):
        path.unlink()
    (raw / name).write_bytes(data)


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("train-images-idx3-ubyte", b"\0\0\x08", "is not an IDX file: 3 bytes"),
        (
            "train-images-idx3-ubyte",
            bytes([0, 0, 0x0D, 3]) + struct.pack(">3I", 1, 28, 28) + bytes(784 * 4),
            "magic number 0x00000d03; expected 0x00000803",
        ),
        (
            "train-labels-idx1-ubyte",
            idx(np.zeros((40, 28, 28), np.uint8)),
            "with 1 dimensions: magic number 0x00000803; expected 0x00000801",
        ),
        ("t10k-images-idx3-ubyte", idx(np.zeros((20, 28, 28), np.uint8))[:-5], "is truncated"),
        ("t10k-labels-idx1-ubyte", idx(np.zeros(20, np.uint8)) + b"x", "longer than its header"),
        ("t10k-labels-idx1-ubyte", idx(np.zeros(19, np.uint8)), "20 images but .* 19 labels"),
        (
            "t10k-labels-idx1-ubyte",
            idx(np.full(20, 10, np.uint8)),
            r"labels span 10\.\.10; expected 0\.\.9",
        ),
        (
            "t10k-images-idx3-ubyte",
            idx(np.zeros((20, 14, 14), np.uint8)),
            r"\(28, 28\) but test images \(14, 14\)",
        ),
    ],
)
def test_damaged_files_are_refused_naming_the_file(tmp_path, name, data, message):
    write_mnist(tmp_path)
    raw = tmp_path / "MNIST" / "raw"
    _damage(raw, name, data)
    with pytest.raises(ValueError, match=message) as error:
        load("mnist", data_dir=tmp_path)
    assert str(raw) in str(error.value)


@pytest.mark.parametrize("cut", [b"garbage", "half"])
def test_a_corrupt_or_cut_gz_is_refused_naming_it(tmp_path, cut):
    write_mnist(tmp_path, gz=True)
    path = tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte.gz"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if cut == "half" else cut)
    with pytest.raises(ValueError, match=f"{path} is not a readable gzip file"):
        load("mnist", data_dir=tmp_path)


def test_absent_files_are_downloaded_through_torchvision_once(tmp_path, monkeypatch):
    calls = []

    def fake_download(root, train, download):
        calls.append((root, train, download))
        write_mnist(tmp_path / "data", "FashionMNIST")

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", fake_download)
    assert load("fashion_mnist", data_dir=tmp_path / "data").num_classes == 10
    assert calls == [(str(tmp_path / "data"), True, True)]
    load("fashion_mnist", data_dir=tmp_path / "data")  # present now: no second download
    assert len(calls) == 1


def test_a_failed_download_says_which_file_is_missing_and_where_files_go(tmp_path, monkeypatch):
    def offline(root, train, download):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz")

    monkeypatch.setattr(torchvision.datasets, "MNIST", offline)
    write_mnist(tmp_path)
    (tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(FileNotFoundError) as error:
        load("mnist", data_dir=tmp_path)
    message = str(error.value)
    assert str(tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte") in message
    assert "download=True" in message and "Error downloading" in message
    empty = tmp_path / "new" / "dir"
    with pytest.raises(FileNotFoundError):
        load("mnist", data_dir=empty)
    assert not (tmp_path / "new").exists()  # a failed download leaves no empty folder behind


def test_no_data_dir_is_an_error_naming_where_files_go():
    with pytest.raises(ValueError, match=r"'mnist' needs a data directory.*DIR/MNIST/raw/"):
        load("mnist")


def _train_lenet(tmp_path, method, *sets):
    """`bench train` of lenet on a tiny IDX set written under tmp_path; the record."""
    write_mnist(tmp_path / "data", train=64, test=20)
    out = tmp_path / "run"
    args = ["train", "--dataset", "mnist", "--arch", "lenet", "--method", method]
    args += ["--data-dir", str(tmp_path / "data"), "--out", str(out)]
    sets = ["epochs=1", "batch_size=32", "probe_size=16", "attack_subset=0", *sets]
    assert main([*args, *(x for s in sets for x in ("--set", s))]) == 0
    return json.loads((out / "record.json").read_text())


def test_train_lenet_fa_on_a_tiny_idx_set_from_the_command_line(tmp_path):
    record = _train_lenet(tmp_path, "fa", "eval_batch_size=20")
    assert (record["dataset"], record["arch"], record["status"]) == ("mnist", "lenet", "ok")
    assert record["trainable_params"] == 61_706  # BioTorch's LeNetMNIST on the 28 px images
    assert len(record["history"]) == 1 and record["blocks"] == 4


def test_bad_dataset_from_the_command_line_exits_2_naming_the_file(tmp_path, capsys):
    write_mnist(tmp_path / "data")
    (tmp_path / "data" / "MNIST" / "raw" / "train-images-idx3-ubyte").write_bytes(b"\0\0\x08\x03")
    args = ["train", "--dataset", "mnist", "--arch", "lenet", "--method", "fa"]
    code = main([*args, "--data-dir", str(tmp_path / "data"), "--out", str(tmp_path / "run")])
    assert code == 2 and "train-images-idx3-ubyte" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # nothing half-written


def test_image_size_resizes_as_torchvisions_resize_of_the_uint8_image(tmp_path):
    """BioTorch serves MNIST at 32 px (Resize((32, 32)) on the PIL image): image_size 32 does the same."""
    from bench.data import DataOptions

    written = write_mnist(tmp_path, train=12, test=4)
    data = load("mnist", data_dir=tmp_path, options=DataOptions(image_size=32))
    assert data.in_shape == (1, 32, 32) and data.train_x.dtype == torch.uint8
    resize = torchvision.transforms.Resize((32, 32))
    from PIL import Image

    theirs = np.stack([np.asarray(resize(Image.fromarray(a))) for a in written["train"][0]])
    diff = np.abs(data.train_x[:, 0].numpy().astype(int) - theirs.astype(int))
    assert diff.max() <= 1 and diff.mean() < 0.3  # PIL rounds in fixed point, this in float32
    assert (
        np.abs(data.train_x[:, 0, 2:30, 2:30].numpy().astype(int) - written["train"][0]).max() > 10
    )


def test_lenet_on_32_px_mnist_is_biotorchs_net_without_padding(tmp_path):
    """The recipe's image_size reaches the data as the trainer sets it up, and lenet then pads nothing."""
    from bench.config.files import load_config
    from bench.config.spec import make_spec
    from bench.run.train import setup

    record = _train_lenet(tmp_path, "bp", "image_size=32")
    assert record["status"] == "ok" and record["trainable_params"] == 61_706
    variants = load_config(check_data=False).variants
    sets = {"image_size": 32, "device": "cpu", "batch_size": 32}
    spec = make_spec("mnist", "lenet", "bp", 0, sets, variants)
    _, data, _, model, _ = setup(spec, tmp_path / "data")
    assert data.in_shape == (1, 32, 32) and model.blocks[0][0].padding == (0, 0)


@pytest.mark.parametrize("name", ["digits", "mnist5k"])
def test_a_dataset_served_as_stored_refuses_image_size_naming_the_key(name):
    from bench.data import DataOptions

    with pytest.raises(ValueError, match=rf"'image_size' with dataset '{name}'.*accepted: 0 here"):
        load(name, options=DataOptions(image_size=32))
