"""FFCV .beton files round-trip an image folder exactly (raw) or closely (JPEG); the imagenet loader serves them."""

import gc
import logging
import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image

from bench.data import BetonSpec, DataOptions, StreamData, ffcv_loader, load
from bench.data.beton.read import read_beton, read_labels
from bench.data.beton.write import TEST_PAGE_SIZE, beton_path, write_split
from bench.data.ffcv_loader import ffcv_available

# numba's dispatcher finalizer raises a harmless KeyError when ffcv's compiled pipelines are collected.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


@pytest.fixture(autouse=True)
def _collect_ffcv_pipelines():
    yield
    gc.collect()  # free them inside the test, where the filter applies, not after pytest's summary


needs_ffcv = pytest.mark.skipif(
    not ffcv_available(), reason="ffcv not installed (scripts/install_system_deps.sh)"
)
RAW = BetonSpec(max_res=64, jpeg_proportion=0.0, quality=90)
JPEG = BetonSpec(max_res=64, jpeg_proportion=1.0, quality=95)


def smooth(rng, size):
    """A smooth colour image (gradients plus a little noise): JPEG keeps it within a few levels."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    base = np.stack([yy, xx, (yy + xx) / 2], axis=-1) * rng.uniform(100, 200, 3) + rng.uniform(
        0, 50, 3
    )
    return np.clip(base + rng.normal(0, 2, base.shape), 0, 255).astype(np.uint8)


def make_tree(root, classes=("b", "a", "c"), train=5, test=2, size=16, eval_name="val"):
    """root/{train,eval_name}/<class>/NN.png; returns {split: (N x H x W x 3 in sorted-class order, labels)}."""
    rng, out = np.random.default_rng(0), {}
    for split, count in (("train", train), (eval_name, test)):
        images, labels = [], []
        for label, name in enumerate(sorted(classes)):
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                image = smooth(rng, size)
                Image.fromarray(image).save(root / split / name / f"{i:02d}.png")
                images.append(image)
                labels.append(label)
        out[split] = (np.stack(images), labels)
    return out


@needs_ffcv
def test_raw_beton_reads_back_pixel_exact_with_labels(tmp_path):
    source = make_tree(tmp_path / "toy")
    path = write_split("toy", tmp_path, "train", RAW, workers=1, page_size=TEST_PAGE_SIZE)
    assert (
        path
        == tmp_path / "ffcv" / "toy" / "train_64_0.00_90.beton"
        == beton_path(tmp_path, "toy", "train", RAW)
    )
    assert path.stat().st_size < 5 << 20 and not list(path.parent.glob(".*.tmp"))
    images, labels = read_beton(path)
    assert labels.tolist() == source["train"][1] == [0] * 5 + [1] * 5 + [2] * 5
    assert torch.equal(images, torch.from_numpy(source["train"][0]).permute(0, 3, 1, 2))


@needs_ffcv
def test_jpeg_beton_reads_back_within_jpeg_tolerance(tmp_path):
    source = make_tree(tmp_path / "toy")
    path = write_split("toy", tmp_path, "val", JPEG, workers=1, page_size=TEST_PAGE_SIZE)
    images, labels = read_beton(path)
    expected = torch.from_numpy(source["val"][0]).permute(0, 3, 1, 2)
    error = (images.float() - expected.float()).abs()
    assert labels.tolist() == source["val"][1] and images.shape == expected.shape
    assert 0 < error.mean() < 3 and error.max() < 40  # lossy (not equal), but close


@needs_ffcv
def test_truncated_beton_is_an_error_naming_the_file(tmp_path):
    make_tree(tmp_path / "toy")
    path = write_split("toy", tmp_path, "train", RAW, workers=1, page_size=TEST_PAGE_SIZE)
    data = path.read_bytes()
    for keep in (len(data) - 10, len(data) // 2, 20):
        path.write_bytes(data[:keep])
        with pytest.raises(ValueError, match=f"{path} is truncated"):
            read_labels(path)


@needs_ffcv
def test_corrupt_image_fails_the_write_naming_it_and_leaves_no_file(tmp_path):
    make_tree(tmp_path / "toy")
    bad = tmp_path / "toy" / "train" / "b" / "03.png"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(ValueError, match=f"cannot decode image {bad}.*was not written"):
        write_split("toy", tmp_path, "train", RAW, workers=1, page_size=TEST_PAGE_SIZE)
    assert not list((tmp_path / "ffcv" / "toy").iterdir())


def test_unknown_split_and_missing_folder_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"image folder {tmp_path / 'toy'} not found"):
        write_split("toy", tmp_path, "train", RAW)
    make_tree(tmp_path / "toy")
    with pytest.raises(ValueError, match="unknown split 'test' .* accepted: train, val"):
        write_split("toy", tmp_path, "test", RAW)


def _epoch_threads():
    return [
        t for t in threading.enumerate() if type(t).__name__ == "EpochIterator" and t.is_alive()
    ]


@needs_ffcv
def test_imagenet_streams_betons_seeded_and_closes_its_iterators(tmp_path):
    source = make_tree(tmp_path / "imagenet", train=6, test=3)
    for split in ("train", "val"):
        write_split("imagenet", tmp_path, split, RAW, workers=1, page_size=TEST_PAGE_SIZE)
    data = load(
        "imagenet", data_dir=tmp_path, options=DataOptions(image_size=8, beton=RAW, workers=1)
    )
    assert (
        isinstance(data, StreamData)
        and data.classes == ["a", "b", "c"]
        and data.in_shape == (3, 8, 8)
    )
    order = lambda seed: [
        y.tolist() for _, y in data.train_batches(4, torch.Generator().manual_seed(seed))
    ]  # noqa
    first = order(3)
    assert first == order(3) and first != order(4) and len(first) == 4  # 18 images, 4 full batches
    batches = list(data.test_batches(4))
    assert torch.cat([y for _, y in batches]).tolist() == source["val"][1]
    assert batches[0][0].shape == (4, 3, 8, 8) and batches[0][0].dtype == torch.float32
    assert data.train_x[:5].shape == (5, 3, 8, 8)
    epoch = data.train_batches(4, torch.Generator().manual_seed(0))
    next(epoch)
    assert _epoch_threads()
    epoch.close()  # the trainer abandoning an epoch (an exception, a diverged run)
    deadline = time.time() + 5
    while _epoch_threads() and time.time() < deadline:
        time.sleep(0.1)
    assert not _epoch_threads()


@needs_ffcv
def test_missing_beton_names_the_file_and_the_command(tmp_path):
    make_tree(tmp_path / "imagenet")
    expected = tmp_path / "ffcv" / "imagenet" / RAW.filename("train")
    with pytest.raises(
        FileNotFoundError, match=f"{expected} not found.*python -m bench beton --dataset imagenet"
    ):
        load("imagenet", data_dir=tmp_path, options=DataOptions(beton=RAW))


def test_without_ffcv_the_folder_streams_through_torchvision_and_warns_once(
    tmp_path, monkeypatch, caplog
):
    make_tree(tmp_path / "imagenet", train=3, test=1)
    monkeypatch.setattr(ffcv_loader, "ffcv_available", lambda: False)
    ffcv_loader._warn_fallback.cache_clear()
    with caplog.at_level(logging.WARNING, logger="bench.data"):
        first = load("imagenet", data_dir=tmp_path, options=DataOptions(image_size=8, workers=0))
        load("imagenet", data_dir=tmp_path, options=DataOptions(image_size=8, workers=0))
    assert [r.message.count("ffcv is not installed") for r in caplog.records] == [1]
    assert isinstance(first, StreamData) and first.num_classes == 3 and len(first.test_y) == 3
    x, y = next(iter(first.test_batches(3)))
    assert x.shape == (3, 3, 8, 8) and y.tolist() == [0, 1, 2]


def test_beton_spec_rejects_bad_values_naming_the_key():
    with pytest.raises(ValueError, match="'jpeg_proportion'; accepted: 0 to 1"):
        BetonSpec(jpeg_proportion=1.5)
    assert BetonSpec().filename("train") == "train_500_0.50_90.beton"


def test_run_inputs_name_the_betons_a_run_reads():
    from bench.config.grid import run_inputs

    assert run_inputs("imagenet", "data", {"beton_quality": 95}) == [
        "data/ffcv/imagenet/train_500_0.50_95.beton",
        "data/ffcv/imagenet/val_500_0.50_95.beton",
    ]
    assert run_inputs("cifar10", "data", {}) == []
