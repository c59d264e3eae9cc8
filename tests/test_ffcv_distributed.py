"""torchrun on streamed datasets: each rank decodes only its contiguous share of every global batch.

Two gloo processes stream `imagenet` from tiny .beton files (FFCV) or its image folder (the torchvision
fallback), recording per step which images each rank decoded. Every image is one flat colour that
encodes its index, so crops and flips (ffcv's are not reproducible) cannot change what a batch holds
or what the model sees: a 2-process `bench train` must give the 1-process record.

Run as a script (what the tests launch, once or under torchrun), recording every rank's decoded
indices and labels per epoch and step to SHARES_DIR/rank<R>.json:
    python tests/test_ffcv_distributed.py epochs {ffcv,folder} SHARES_DIR DATA_DIR   (train_batches alone)
    python tests/test_ffcv_distributed.py train {ffcv,folder} SHARES_DIR ARGS...      (`bench ARGS`)
"""

import gc
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from bench import distributed
from bench.data import BetonSpec
from bench.data.ffcv_loader import ffcv_available
from bench.data.stream import ShareSampler, worker_start_method

pytestmark = pytest.mark.filterwarnings(
    "ignore::pytest.PytestUnraisableExceptionWarning"
)  # numba finalizers
needs_ffcv = pytest.mark.skipif(
    not ffcv_available(), reason="ffcv not installed (scripts/install_system_deps.sh)"
)
RAW = BetonSpec(max_res=64, jpeg_proportion=0.0, quality=90)
CLASSES, PER_CLASS, BATCH, EPOCHS = (
    ("a", "b", "c"),
    6,
    5,
    2,
)  # 18 images: 3 global batches of 5 (2 + 3)


def colour(index: int) -> int:
    """The red level of training image `index` (sorted-class order); index = (red - 5) / 10."""
    return 10 * index + 5


def make_tree(root: Path) -> None:
    """root/{train,val}/<class>/NN.png, 16 x 16 flat colours: red encodes the index, green the class."""
    for split, count in (("train", PER_CLASS), ("val", 2)):
        for label, name in enumerate(CLASSES):
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                index = label * count + i
                pixel = (
                    (colour(index), 60 + 60 * label, 128)
                    if split == "train"
                    else (128, 60 + 60 * label, 0)
                )
                Image.new("RGB", (16, 16), pixel).save(root / split / name / f"{i:02d}.png")


def decoded_indices(x: torch.Tensor, data) -> list[int]:
    """The training indices of a normalised batch of flat images (red channel back to 0-255)."""
    red = (x[:, 0] * data.std[0] + data.mean[0]).mul(255).mean(dim=(1, 2))
    return ((red - 5) / 10).round().long().tolist()


def stream(data_dir: Path):
    from bench.data import DataOptions, load

    return load(
        "imagenet", data_dir=data_dir, options=DataOptions(image_size=8, beton=RAW, workers=1)
    )


def epochs_of(data, seed: int = 7) -> list:
    """EPOCHS epochs of data.train_batches(BATCH) from one generator: per step, decoded indices and labels."""
    generator = torch.Generator().manual_seed(seed)
    return [
        [
            {"ids": decoded_indices(x, data), "labels": y.tolist(), "rank_share": data.rank_share}
            for x, y in data.train_batches(BATCH, generator)
        ]
        for _ in range(EPOCHS)
    ]


def ffcv_one_process(seed: int = 7) -> list:
    """The steps one process reads from the training .beton: ffcv's own RANDOM order (world 1, no rank
    shares) for each epoch's seed, drawn from the generator as StreamData.train_batches draws it, cut into
    global batches of BATCH, remainder dropped. Computed, not decoded: no ffcv pipeline to compile."""
    from ffcv.traversal_order import Random

    generator, n, epochs = torch.Generator().manual_seed(seed), len(CLASSES) * PER_CLASS, []
    for _ in range(EPOCHS):
        epoch_seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
        loader = SimpleNamespace(
            indices=np.arange(n, dtype="uint64"), seed=epoch_seed, distributed=False
        )
        order = Random(loader).sample_order(0).tolist()
        epochs.append(
            [
                {
                    "ids": order[k : k + BATCH],
                    "labels": [i // PER_CLASS for i in order[k : k + BATCH]],
                    "rank_share": True,
                }
                for k in range(0, n // BATCH * BATCH, BATCH)
            ]
        )
    return epochs


def record_shares(folder: Path) -> None:
    """Wrap StreamData.train_batches to log each epoch's decoded indices and labels per step; written to
    folder/rank<R>.json at exit."""
    import atexit

    from bench.data.stream import StreamData

    epochs, original = [], StreamData.train_batches

    def train_batches(self, batch_size, generator):
        steps = []
        epochs.append(steps)
        for x, y in original(self, batch_size, generator):
            steps.append(
                {
                    "ids": decoded_indices(x, self),
                    "labels": y.tolist(),
                    "rank_share": self.rank_share,
                }
            )
            yield x, y

    StreamData.train_batches = train_batches
    rank = os.environ.get("RANK", "0")
    atexit.register(lambda: (folder / f"rank{rank}.json").write_text(json.dumps(epochs)))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(processes: int, *args: str) -> subprocess.Popen:
    """This file as a script on `processes` processes (torchrun, gloo, when more than one)."""
    args = [__file__, *args]
    if processes > 1:
        args = [
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            str(processes),
            "--master_addr",
            "127.0.0.1",
            "--master_port",
            str(_free_port()),
            *args,
        ]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )


def finish(job: subprocess.Popen, shares: Path, processes: int) -> list:
    """Wait for a launched job; every rank's recorded epochs."""
    _, stderr = job.communicate(timeout=300)  # ranks start DataLoader workers through a fork server
    assert job.returncode == 0, stderr[-3000:]
    return [json.loads((shares / f"rank{r}.json").read_text()) for r in range(processes)]


def start_train(tmp_path: Path, kind: str, processes: int) -> tuple[subprocess.Popen, Path, Path]:
    """`bench train` (bp, mlp3) on tiny imagenet through `kind` on `processes` processes, started."""
    out, shares = tmp_path / f"run{processes}", tmp_path / f"shares{processes}"
    shares.mkdir()
    args = [
        "train",
        kind,
        str(shares),
        "train",
        "--dataset",
        "imagenet",
        "--arch",
        "mlp3",
        "--method",
        "bp",
        "--seed",
        "3",
        "--data-dir",
        str(tmp_path),
        "--out",
        str(out),
    ]
    for key, value in (
        ("epochs", EPOCHS),
        ("batch_size", BATCH),
        ("device", "cpu"),
        ("probe_size", 6),
        ("eval_batch_size", 4),
        ("image_size", 8),
        ("data_workers", 1),
        ("beton_max_res", RAW.max_res),
        ("beton_jpeg_proportion", RAW.jpeg_proportion),
        ("beton_quality", RAW.quality),
    ):
        args += ["--set", f"{key}={value}"]
    return launch(processes, *args), shares, out


def check_shares(one: list, two: list) -> None:
    """Each rank's steps are its contiguous slice of the global batch one process saw, and nothing else."""
    (whole,), (first, second) = one, two
    assert len(whole) == len(first) == len(second) == EPOCHS
    for epoch, (batches, left, right) in enumerate(zip(whole, first, second)):
        assert len(batches) == len(left) == len(right) == 18 // BATCH  # full global batches only
        seen = []
        for step, (batch, a, b) in enumerate(zip(batches, left, right)):
            assert a["rank_share"] and b["rank_share"]
            assert len(batch["ids"]) == BATCH and (len(a["ids"]), len(b["ids"])) == (
                2,
                3,
            )  # bounds(5): [0,2), [2,5)
            assert a["ids"] + b["ids"] == batch["ids"], (epoch, step)  # contiguous slices, in order
            assert not set(a["ids"]) & set(b["ids"])  # disjoint
            assert (
                a["labels"] + b["labels"]
                == batch["labels"]
                == [i // PER_CLASS for i in batch["ids"]]
            )
            seen += batch["ids"]
        assert len(set(seen)) == len(seen) == 18 // BATCH * BATCH and set(seen) <= set(
            range(18)
        )  # each once
    assert whole[0] != whole[1]  # the run's generator draws a new order each epoch


def check_records(one: dict, two: dict) -> None:
    assert (one["provenance"]["world_size"], two["provenance"]["world_size"]) == (1, 2)
    assert len(one["history"]) == len(two["history"]) == EPOCHS
    for a, b in zip(one["history"], two["history"]):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-4, abs=1e-5)
        assert b["train_acc"] == pytest.approx(
            a["train_acc"], abs=100 / 15 + 1e-6
        )  # one borderline argmax
        assert b["test_acc"] == pytest.approx(a["test_acc"], abs=1e-6)
        assert b["alignment"] == pytest.approx(a["alignment"], abs=1e-3)
    assert one["history"][0]["train_loss"] != one["history"][1]["train_loss"]  # it trained


@pytest.fixture
def tree(tmp_path):
    make_tree(tmp_path / "imagenet")
    return tmp_path


@pytest.mark.slow
@needs_ffcv
def test_two_ranks_decode_disjoint_contiguous_shares_of_beton_batches(tree):
    """ffcv: 2 ranks' loaders read their slices of the global batches ffcv's order gives one process."""
    from bench.data.beton.write import TEST_PAGE_SIZE, write_split

    for split in ("train", "val"):
        write_split("imagenet", tree, split, RAW, workers=1, page_size=TEST_PAGE_SIZE)
    gc.collect()
    (tree / "shares").mkdir()
    two = finish(launch(2, "epochs", "ffcv", str(tree / "shares"), str(tree)), tree / "shares", 2)
    check_shares([ffcv_one_process()], two)


@pytest.mark.slow
def test_two_ranks_train_on_image_folder_shares_like_one_process(tree):
    """The torchvision fallback, through `bench train`: disjoint contiguous shares, and the 1-process record."""
    one, two = start_train(tree, "folder", 1), start_train(tree, "folder", 2)
    one_steps, two_steps = finish(one[0], one[1], 1), finish(two[0], two[1], 2)
    check_shares(one_steps, two_steps)
    check_records(*(json.loads((out / "record.json").read_text()) for _, _, out in (one, two)))


def test_ranks_start_loader_workers_through_a_fork_server(monkeypatch):
    """Forking a worker from a rank with gloo's threads running can hang it (seen once in CI)."""
    assert worker_start_method(2) is None  # one process: torch's default
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    assert worker_start_method(2) == "forkserver" and worker_start_method(0) is None


@pytest.mark.parametrize("batch_size, world", [(5, 2), (7, 3), (4, 4), (16, 3)])
def test_share_sampler_ranks_partition_the_one_process_batches(batch_size, world):
    one = list(ShareSampler(50, batch_size, seed=11))
    ranks = [list(ShareSampler(50, batch_size, seed=11, rank=r, world=world)) for r in range(world)]
    assert len(one) == 50 // batch_size and all(len(batches) == len(one) for batches in ranks)
    for step, batch in enumerate(one):
        shares = [batches[step] for batches in ranks]
        assert sum(shares, []) == batch  # rank r holds [B*r//W, B*(r+1)//W) of the global batch
        assert [len(s) for s in shares] == [
            len(range(*distributed.bounds(batch_size, r, world))) for r in range(world)
        ]
    assert {seed for seed, _ in sum(one, [])} == {11}
    assert one != list(ShareSampler(50, batch_size, seed=12))


def test_share_of_batches_matches_shard_of_each_global_batch():
    order = torch.randperm(23, generator=torch.Generator().manual_seed(0))
    for world in (1, 2, 3):
        for r in range(world):
            start, stop = distributed.bounds(6, r, world)
            mine = distributed.share_of_batches(order, 6, r, world)
            assert torch.equal(
                mine, torch.cat([order[k : k + 6][start:stop] for k in range(0, 18, 6)])
            )
            assert np.array_equal(
                distributed.share_of_batches(order.numpy(), 6, r, world), mine.numpy()
            )


def test_a_global_batch_smaller_than_the_world_is_refused():
    with pytest.raises(ValueError, match="'batch_size'; accepted: at least the 3 processes"):
        ShareSampler(10, 2, seed=0, rank=2, world=3)


def test_per_image_augmentation_depends_on_seed_and_index_only(tmp_path):
    from bench.data.folder import read_tree
    from bench.data.stream import FileImages, folder_transforms

    root = tmp_path / "toy"
    for label, name in enumerate(CLASSES):
        (root / "train" / name).mkdir(parents=True)
        (root / "val" / name).mkdir(parents=True)
        rng = np.random.default_rng(label)
        Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(
            root / "train" / name / "00.png"
        )
        Image.new("RGB", (24, 24)).save(root / "val" / name / "00.png")
    train, _ = read_tree(root)
    images = FileImages(train, folder_transforms(8)[0])
    torch.manual_seed(0)
    state = torch.get_rng_state()
    first = images[(5, 1)][0]
    assert torch.equal(torch.get_rng_state(), state)  # the global generator is left alone
    images[(9, 2)]  # another image in between (another worker's or rank's history) changes nothing
    assert torch.equal(images[(5, 1)][0], first)
    assert any(
        not torch.equal(images[(seed, 1)][0], first) for seed in range(6, 12)
    )  # a new epoch, a new crop


if __name__ == "__main__":
    mode, kind, shares = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    if kind == "folder":
        from bench.data import ffcv_loader

        ffcv_loader.ffcv_available = lambda: False
    if mode == "train":
        record_shares(shares)
        from bench.cli import main

        sys.exit(main(sys.argv[4:]))
    distributed.init_from_env()
    (shares / f"rank{distributed.rank()}.json").write_text(
        json.dumps(epochs_of(stream(Path(sys.argv[4]))))
    )
    distributed.shutdown()
