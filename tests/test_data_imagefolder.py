"""Image folders load with sorted-class labels and exact pixels, cache until they change, stream when large."""

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bench.data import AugmentedData, DataOptions, StreamData, check_name, image_folders, load
from bench.data import imagefolder as imagefolder_module


def make_tree(
    root, classes=("cat", "ant", "bee"), train=4, test=2, size=(8, 8), eval_name="test", seed=0
):
    """A PNG (lossless) tree root/{train,eval_name}/<class>/NN.png; returns {(split, class, index): H x W x 3}."""
    rng, pixels = np.random.default_rng(seed), {}
    for split, count in (("train", train), (eval_name, test)):
        for name in classes:
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                image = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
                Image.fromarray(image).save(root / split / name / f"{i:02d}.png")
                pixels[split, name, i] = image
    return pixels


def options(tmp_path, **kw):
    return DataOptions(cache_dir=tmp_path / "cache", workers=1, **kw)


def test_tree_loads_with_sorted_class_labels_and_exact_pixels(tmp_path):
    pixels = make_tree(tmp_path / "toy")
    data = load("toy", data_dir=tmp_path, options=options(tmp_path))
    assert isinstance(data, AugmentedData) and data.classes == ["ant", "bee", "cat"]
    assert data.train_x.shape == (12, 3, 8, 8) and data.test_x.shape == (6, 3, 8, 8)
    assert data.train_y.tolist() == [0] * 4 + [1] * 4 + [2] * 4 and data.test_y.tolist() == [
        0,
        0,
        1,
        1,
        2,
        2,
    ]
    assert torch.equal(
        data.train_x[9], torch.from_numpy(pixels["train", "cat", 1]).permute(2, 0, 1)
    )
    assert torch.equal(data.test_x[2], torch.from_numpy(pixels["test", "bee", 0]).permute(2, 0, 1))
    assert image_folders(tmp_path) == ["toy"]


def test_val_folder_serves_as_the_evaluation_split_and_image_size_resizes(tmp_path):
    make_tree(tmp_path / "wide", size=(12, 6), eval_name="val")
    data = load("wide", data_dir=tmp_path, options=options(tmp_path, image_size=4))
    assert data.train_x.shape == (12, 3, 4, 4) and data.test_x.shape == (6, 3, 4, 4)


def test_cache_is_reused_until_the_folder_changes(tmp_path, monkeypatch):
    make_tree(tmp_path / "toy")
    first = load("toy", data_dir=tmp_path, options=options(tmp_path))
    cached = list((tmp_path / "cache").glob("toy-native-*.pt"))
    assert len(cached) == 1
    decode = imagefolder_module.decode_all
    monkeypatch.setattr(
        imagefolder_module, "decode_all", lambda *a: pytest.fail("decoded although cached")
    )
    again = load("toy", data_dir=tmp_path, options=options(tmp_path))
    assert torch.equal(again.train_x, first.train_x) and torch.equal(again.test_y, first.test_y)
    monkeypatch.setattr(imagefolder_module, "decode_all", decode)
    changed = tmp_path / "toy" / "train" / "bee" / "00.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(changed)
    os.utime(changed, ns=(1, 1))  # a new mtime and size even on coarse clocks
    fresh = load("toy", data_dir=tmp_path, options=options(tmp_path))
    assert int(fresh.train_x[4].sum()) == 0 and not torch.equal(fresh.train_x, first.train_x)
    now = list((tmp_path / "cache").glob("toy-native-*.pt"))
    assert len(now) == 1 and now != cached  # the stale cache was replaced, not kept beside


def test_a_broken_cache_is_decoded_again(tmp_path):
    make_tree(tmp_path / "toy")
    first = load("toy", data_dir=tmp_path, options=options(tmp_path))
    (cache,) = (tmp_path / "cache").glob("toy-native-*.pt")
    cache.write_bytes(b"not a tensor file")
    again = load("toy", data_dir=tmp_path, options=options(tmp_path))
    assert torch.equal(again.train_x, first.train_x) and cache.stat().st_size > 1000


def test_pool_decoding_equals_serial_decoding(tmp_path):
    make_tree(tmp_path / "toy", train=30)
    paths = sorted(str(p) for p in (tmp_path / "toy" / "train").rglob("*.png"))
    monkey_chunk = imagefolder_module.CHUNK
    imagefolder_module.CHUNK = 7
    try:
        pooled = imagefolder_module.decode_all(paths, None, (8, 8), workers=2)
    finally:
        imagefolder_module.CHUNK = monkey_chunk
    assert torch.equal(pooled, imagefolder_module.decode_all(paths, None, (8, 8), workers=1))


def test_mixed_sizes_without_image_size_name_the_file(tmp_path):
    make_tree(tmp_path / "toy")
    Image.fromarray(np.zeros((9, 8, 3), np.uint8)).save(
        tmp_path / "toy" / "test" / "bee" / "01.png"
    )
    with pytest.raises(
        ValueError, match=r"bee/01.png is 8x9, the first training image is 8x8; set image_size"
    ):
        load("toy", data_dir=tmp_path, options=options(tmp_path))


def test_missing_folder_names_it_and_unknown_names_list_the_known(tmp_path):
    (tmp_path / "half" / "train" / "a").mkdir(parents=True)
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "half" / "train" / "a" / "0.png")
    with pytest.raises(FileNotFoundError, match=f"{tmp_path / 'half'} has no test/ or val/ folder"):
        load("half", data_dir=tmp_path, options=options(tmp_path))
    with pytest.raises(
        ValueError, match=r"unknown dataset 'nope'; known: cifar10, .*mnist5k, or an image folder"
    ):
        check_name("nope", tmp_path)
    with pytest.raises(ValueError, match="bad dataset name '../x'; accepted: cifar10"):
        check_name("../x", tmp_path)


def test_empty_class_folder_is_named(tmp_path):
    make_tree(tmp_path / "toy")
    (tmp_path / "toy" / "train" / "dog").mkdir()
    with pytest.raises(
        ValueError, match=f"class folder {tmp_path / 'toy' / 'train' / 'dog'} is empty"
    ):
        load("toy", data_dir=tmp_path, options=options(tmp_path))


def test_test_classes_must_match_train(tmp_path):
    make_tree(tmp_path / "toy")
    (tmp_path / "toy" / "test" / "cat").rename(tmp_path / "toy" / "test" / "cow")
    with pytest.raises(
        ValueError, match=r"test has classes that differ from train/: extra \['cow'\], missing"
    ):
        load("toy", data_dir=tmp_path, options=options(tmp_path))


def test_corrupt_image_is_named(tmp_path):
    make_tree(tmp_path / "toy")
    bad = tmp_path / "toy" / "train" / "bee" / "02.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    with pytest.raises(ValueError, match=f"cannot decode image {bad}"):
        load("toy", data_dir=tmp_path, options=options(tmp_path))


def test_large_folders_stream_with_seeded_order_and_the_same_interface(tmp_path):
    make_tree(tmp_path / "toy", size=(10, 10))
    data = load(
        "toy", data_dir=tmp_path, options=options(tmp_path, image_size=8, max_device_bytes=100)
    )
    assert isinstance(data, StreamData) and data.in_shape == (3, 8, 8) and data.num_classes == 3
    probe = data.train_x[:5]
    assert probe.shape == (5, 3, 8, 8) and probe.dtype == torch.uint8
    labels = lambda seed: [
        y.tolist() for _, y in data.train_batches(4, torch.Generator().manual_seed(seed))
    ]  # noqa
    assert (
        labels(1) == labels(1)
        and len(labels(1)) == 3
        and sorted(sum(labels(1), [])) == data.train_y.tolist()
    )
    batches = list(data.test_batches(4))
    assert (
        torch.equal(torch.cat([y for _, y in batches]), data.test_y)
        and batches[0][0].dtype == torch.float32
    )
    assert not list((tmp_path / "cache").glob("*.pt"))


def _real_data_dir() -> Path | None:
    """BENCH_DATA_DIR, when it holds the CIFAR-10 JPEG tree (../shared/data/cifar10-jpeg), else None."""
    root = os.environ.get("BENCH_DATA_DIR")
    return Path(root) if root and (Path(root) / "cifar10-jpeg" / "train").is_dir() else None


@pytest.mark.slow
@pytest.mark.skipif(
    _real_data_dir() is None, reason="set BENCH_DATA_DIR to a folder holding cifar10-jpeg/"
)
def test_real_cifar10_jpeg_tree_loads_with_canonical_labels_and_statistics():
    # The cache goes outside the repo and outside the (read-only) data: reruns take seconds, not a minute.
    cache = Path(
        os.environ.get("BENCH_CACHE_DIR", Path(tempfile.gettempdir()) / "bench-test-cache")
    )
    data = load("cifar10-jpeg", data_dir=_real_data_dir(), options=DataOptions(cache_dir=cache))
    assert data.classes[0] == "airplane" and data.classes[9] == "truck" and len(data.classes) == 10
    assert data.train_x.shape == (50000, 3, 32, 32) and data.test_x.shape == (10000, 3, 32, 32)
    assert (
        torch.bincount(data.train_y).tolist() == [5000] * 10
        and torch.bincount(data.test_y).tolist() == [1000] * 10
    )
    means = data.test_x.float().mean(dim=(0, 2, 3)) / 255
    assert torch.allclose(means, torch.tensor([0.4941, 0.4851, 0.4504]), atol=0.005)
    assert torch.allclose(data.mean, torch.tensor([0.49, 0.48, 0.45]), atol=0.01)


def test_fingerprint_is_the_same_from_a_relative_or_absolute_path_and_changes_with_a_file(
    tmp_path, monkeypatch
):
    """The cache key hashes paths relative to the split folder, however the folder was named."""
    from bench.data.folder import read_tree

    make_tree(tmp_path / "toy")
    monkeypatch.chdir(tmp_path)
    absolute, relative = read_tree(tmp_path / "toy")[0], read_tree(Path("toy"))[0]
    assert absolute.fingerprint() == relative.fingerprint()
    (tmp_path / "toy" / "train" / "ant" / "00.png").rename(
        tmp_path / "toy" / "train" / "ant" / "09.png"
    )
    assert read_tree(Path("toy"))[0].fingerprint() != relative.fingerprint()
