"""CIFAR-10/100 files in torchvision's layout load through the real path; on-device augmentation is exact and seeded."""

import os
import pickle

import numpy as np
import pytest
import torch
import torchvision

from bench.data import DataOptions, load
from bench.data import augment as augment_module
from bench.data.augment import (
    NO_AUGMENT,
    Augment,
    AugmentedData,
    channel_stats,
    cutout,
    random_crop,
    random_flip,
)
from bench.data.tensors import TensorData

CIFAR10_NAMES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]


def _dump(path, entry):
    with open(path, "wb") as f:
        pickle.dump(entry, f, protocol=2)  # the real files are Python 2 pickles (protocol 2)


def _images(rng, n):
    return rng.integers(0, 256, (n, 3072), dtype=np.uint8)


def write_cifar10(root, per_batch=8, test=6, seed=0):
    """torchvision's cifar-10-batches-py/ with random images; returns {file name: (data, labels)}."""
    rng, folder, written = np.random.default_rng(seed), root / "cifar-10-batches-py", {}
    folder.mkdir(parents=True)
    for name, n in [*[(f"data_batch_{i}", per_batch) for i in range(1, 6)], ("test_batch", test)]:
        data, labels = _images(rng, n), rng.integers(0, 10, n).tolist()
        _dump(
            folder / name,
            {
                "batch_label": f"{name} of 5",
                "labels": labels,
                "data": data,
                "filenames": [f"img_{i}.png" for i in range(n)],
            },
        )
        written[name] = (data, labels)
    _dump(
        folder / "batches.meta",
        {"num_cases_per_batch": per_batch, "label_names": CIFAR10_NAMES, "num_vis": 3072},
    )
    return written


def write_cifar100(root, train=12, test=5, seed=1):
    """torchvision's cifar-100-python/ (train, test, meta) with fine and coarse labels."""
    rng, folder, written = np.random.default_rng(seed), root / "cifar-100-python", {}
    folder.mkdir(parents=True)
    for name, n in [("train", train), ("test", test)]:
        data, fine = _images(rng, n), rng.integers(0, 100, n).tolist()
        _dump(
            folder / name,
            {
                "filenames": [f"f{i}.png" for i in range(n)],
                "batch_label": f"{name} batch",
                "fine_labels": fine,
                "coarse_labels": [f // 5 for f in fine],
                "data": data,
            },
        )
        written[name] = (data, fine)
    _dump(
        folder / "meta",
        {
            "fine_label_names": [f"fine{i:02d}" for i in range(100)],
            "coarse_label_names": [f"coarse{i:02d}" for i in range(20)],
        },
    )
    return written


def test_cifar10_files_load_with_shapes_labels_pixels_and_names(tmp_path):
    written = write_cifar10(tmp_path)
    data = load("cifar10", data_dir=tmp_path)
    assert isinstance(data, AugmentedData) and data.augment == Augment()
    assert data.train_x.shape == (40, 3, 32, 32) and data.test_x.shape == (6, 3, 32, 32)
    assert data.train_x.dtype == torch.uint8 and data.train_y.dtype == torch.int64
    assert data.classes == CIFAR10_NAMES and data.num_classes == 10 and data.in_shape == (3, 32, 32)
    assert data.train_y.tolist() == sum((written[f"data_batch_{i}"][1] for i in range(1, 6)), [])
    assert data.test_y.tolist() == written["test_batch"][1]
    row = written["data_batch_2"][0][3]  # 1024 red, then green, then blue, each row-major
    assert torch.equal(data.train_x[8 + 3, 1], torch.from_numpy(row[1024:2048].reshape(32, 32)))
    assert torch.equal(
        data.test_x[5, 2], torch.from_numpy(written["test_batch"][0][5][2048:].reshape(32, 32))
    )


def test_cifar100_uses_fine_labels_and_fine_names(tmp_path):
    written = write_cifar100(tmp_path)
    data = load("cifar100", data_dir=tmp_path)
    assert data.train_x.shape == (12, 3, 32, 32) and data.test_x.shape == (5, 3, 32, 32)
    assert (
        data.train_y.tolist() == written["train"][1] and data.test_y.tolist() == written["test"][1]
    )
    assert data.num_classes == 100 and data.classes[0] == "fine00" and data.classes[99] == "fine99"
    assert torch.equal(data.train_x[4].flatten(), torch.from_numpy(written["train"][0][4]))


def test_torchvision_rejects_the_written_files_that_the_suite_reads(tmp_path):
    write_cifar10(tmp_path)  # the reason the suite has its own reader: torchvision checks every md5
    with pytest.raises(RuntimeError, match="corrupted"):
        torchvision.datasets.CIFAR10(str(tmp_path), train=True, download=False)


def test_download_is_tried_only_when_files_are_absent(tmp_path, monkeypatch):
    calls = []

    def fake_download(root, train, download):
        calls.append(root)
        write_cifar10(tmp_path / "fresh")  # what torchvision would leave behind

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", fake_download)
    write_cifar10(tmp_path / "present")
    load("cifar10", data_dir=tmp_path / "present")
    assert calls == []
    assert load("cifar10", data_dir=tmp_path / "fresh").train_x.shape[0] == 40
    assert calls == [str(tmp_path / "fresh")]


def test_failed_download_says_where_files_go_and_how_to_get_them(tmp_path, monkeypatch):
    def offline(root, train, download):
        raise RuntimeError("network unreachable")

    monkeypatch.setattr(torchvision.datasets, "CIFAR100", offline)
    with pytest.raises(FileNotFoundError) as error:
        load("cifar100", data_dir=tmp_path)
    message = str(error.value)
    assert (
        str(tmp_path / "cifar-100-python" / "train") in message and "network unreachable" in message
    )
    assert "cifar-100-python.tar.gz" in message and "download=True" in message


def test_a_sigterm_during_the_download_stops_and_is_not_called_a_failed_download(
    tmp_path, monkeypatch
):
    """A stop is not an error: the download's `except Exception` (any failure -> the same advice) lets a
    SIGTERM through, as it lets Ctrl-C through (stop.Terminated is a BaseException)."""
    from bench.run import stop

    def stopped(root, train, download):
        raise stop.Terminated()

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", stopped)
    with pytest.raises(stop.Terminated):
        load("cifar10", data_dir=tmp_path)


def test_cifar_without_a_data_dir_names_the_setting():
    with pytest.raises(ValueError, match="cifar10.*--data-dir"):
        load("cifar10")


def test_bad_batch_files_are_errors_naming_the_file(tmp_path):
    write_cifar10(tmp_path)
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    batch.write_bytes(batch.read_bytes()[:500])
    with pytest.raises(ValueError, match="data_batch_3 is not a CIFAR pickle"):
        load("cifar10", data_dir=tmp_path)
    _dump(
        batch, {"data": os.system, "labels": []}
    )  # a pickle that would import a function: refused
    with pytest.raises(ValueError, match="data_batch_3 is not a CIFAR pickle: refusing to load"):
        load("cifar10", data_dir=tmp_path)
    _dump(batch, {"data": np.zeros((2, 3072), np.uint8), "labels": [0, 10]})
    with pytest.raises(ValueError, match="data_batch_3: labels span 0..10; expected 0..9"):
        load("cifar10", data_dir=tmp_path)


# ---- on-device augmentation ----------------------------------------------------------------------


def _coordinates(n=64):
    """n images whose channel 0 is row + 1, channel 1 is column + 1 (so a pixel says where it came from)."""
    rows = torch.arange(1, 33, dtype=torch.uint8).view(32, 1).expand(32, 32)
    return (
        torch.stack([rows, rows.T, torch.full((32, 32), 255, dtype=torch.uint8)])
        .expand(n, 3, 32, 32)
        .clone()
    )


def test_random_crop_is_a_shift_within_the_padding_filled_with_zeros():
    x = _coordinates(256)
    out = random_crop(x, 4, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == torch.uint8
    shifts = set()
    for image in out:
        inside = image[2] == 255
        r, c = inside.nonzero()[0].tolist()  # first real pixel: where the shift shows
        dy, dx = int(image[0, r, c]) - 1 - r, int(image[1, r, c]) - 1 - c
        assert -4 <= dy <= 4 and -4 <= dx <= 4
        expected = torch.zeros_like(image)
        src = x[0][:, max(dy, 0) : 32 + min(dy, 0), max(dx, 0) : 32 + min(dx, 0)]
        expected[:, max(-dy, 0) : 32 - max(dy, 0), max(-dx, 0) : 32 - max(dx, 0)] = src
        assert torch.equal(image, expected)
        shifts.add((dy, dx))
    assert len(shifts) > 40 and {-4, 4} <= {
        dy for dy, _ in shifts
    }  # every image its own offset, edges reached


def test_flips_are_drawn_per_image():
    x = _coordinates(64)
    out = random_flip(x, torch.Generator().manual_seed(3))
    flipped = torch.tensor([torch.equal(o, x[0].flip(-1)) for o in out])
    kept = torch.tensor([torch.equal(o, x[0]) for o in out])
    assert bool((flipped ^ kept).all()) and 16 < int(flipped.sum()) < 48


def test_cutout_zeroes_one_clipped_square_per_image():
    x = torch.full((32, 3, 32, 32), 7, dtype=torch.uint8)
    out = cutout(x, 8, torch.Generator().manual_seed(0))
    zeroed = (out == 0).all(dim=1)
    for mask in zeroed:
        rows, cols = mask.any(dim=1).nonzero().flatten(), mask.any(dim=0).nonzero().flatten()
        assert (
            0 < len(rows) <= 8 and 0 < len(cols) <= 8 and int(mask.sum()) == len(rows) * len(cols)
        )
    assert bool(((out == 0) | (out == 7)).all()) and Augment().cutout == 0


def test_same_seed_same_augmented_batches_and_augmentation_changes_them(tmp_path):
    write_cifar10(tmp_path)
    data = load("cifar10", data_dir=tmp_path)
    run = lambda seed: list(data.train_batches(16, torch.Generator().manual_seed(seed)))  # noqa: E731
    first, again, other = run(5), run(5), run(6)
    assert len(first) == 2 and all(
        torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, again)
    )
    assert not torch.equal(first[0][0], other[0][0])
    plain = load("cifar10", data_dir=tmp_path, options=DataOptions(augment=NO_AUGMENT))
    unaugmented = list(plain.train_batches(16, torch.Generator().manual_seed(5)))
    assert torch.equal(unaugmented[0][1], first[0][1]) and not torch.equal(
        unaugmented[0][0], first[0][0]
    )


@pytest.mark.parametrize(
    "augment", [Augment(), Augment(pad=2, flip=False), Augment(pad=0), Augment(cutout=6)]
)
def test_fused_crop_flip_equals_augment_drawn_the_same_way(augment, monkeypatch):
    x = torch.randint(
        0, 256, (40, 3, 12, 10), dtype=torch.uint8, generator=torch.Generator().manual_seed(1)
    )
    y = torch.arange(40) % 4
    data = AugmentedData("t", x, y, x, y, list("abcd"), augment)
    fused = list(data.train_batches(8, torch.Generator().manual_seed(2)))
    monkeypatch.setattr(
        augment_module, "FUSED_MAX_BYTES", 0
    )  # the per-batch path: Augment on index_select
    plain = list(data.train_batches(8, torch.Generator().manual_seed(2)))
    assert data._padded is not None and len(fused) == 5
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(fused, plain))


def test_channel_stats_match_tensor_data_without_a_float_copy():
    x = torch.randint(
        0, 256, (50, 3, 5, 4), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    y = torch.zeros(50, dtype=torch.int64)
    reference = TensorData("t", x, y, x, y, ["a"])
    mean, std = channel_stats(x)
    assert torch.allclose(mean, reference.mean, atol=1e-6) and torch.allclose(
        std, reference.std, atol=1e-6
    )


def test_bad_augment_values_name_the_key():
    with pytest.raises(ValueError, match="augment 'pad'.*>= 0"):
        Augment(pad=-1)


def test_data_options_from_a_recipe_take_its_keys_and_default_the_rest():
    options = DataOptions.from_recipe(
        {"image_size": 0, "crop_pad": 2, "cutout": 8, "beton_quality": 95, "lr": 0.1}
    )
    assert options.image_size is None and options.augment == Augment(pad=2, flip=True, cutout=8)
    assert options.beton.quality == 95 and options.beton.max_res == 500 and options.workers == 2
    assert DataOptions.from_recipe({"image_size": 64}).image_size == 64
    with pytest.raises(ValueError, match="augment 'cutout'"):
        DataOptions.from_recipe({"cutout": -2})


def test_augmentation_settings_leave_every_epochs_batch_order_unchanged():
    x = torch.randint(
        0, 256, (40, 3, 12, 10), dtype=torch.uint8, generator=torch.Generator().manual_seed(1)
    )
    y = torch.arange(40)
    orders = []
    for augment in (Augment(), Augment(flip=False), Augment(cutout=4)):
        data = AugmentedData("t", x, y, x, y, [str(i) for i in range(40)], augment)
        generator = torch.Generator().manual_seed(3)
        orders.append([b[1] for _ in range(2) for b in data.train_batches(8, generator)])
    assert all(torch.equal(a, b) for order in orders[1:] for a, b in zip(orders[0], order))
