"""torchrun: one run on 2 CPU processes (gloo) gives the record of 1 process with the same global batch."""

import json
import os
import socket
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train(out, method: str, processes: int) -> dict:
    args = [
        "-m",
        "bench",
        "train",
        "--dataset",
        "digits",
        "--arch",
        "mlp3",
        "--method",
        method,
        "--seed",
        "3",
        "--out",
        str(out),
        "--set",
        "epochs=2",
        "--set",
        "batch_size=64",
        "--set",
        "device=cpu",
        "--set",
        "probe_size=64",
    ]
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
    done = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=300, env=env
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((out / "record.json").read_text())


@pytest.mark.parametrize("method", ["bp", "dfa", "ssa"])
def test_two_processes_match_one(tmp_path, method):
    one = train(tmp_path / "one", method, 1)
    two = train(tmp_path / "two", method, 2)
    assert two["config_hash"] == one["config_hash"]
    assert (one["provenance"]["world_size"], two["provenance"]["world_size"]) == (1, 2)
    for a, b in zip(one["history"], two["history"]):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-4, abs=1e-5)
        assert b["train_acc"] == pytest.approx(
            a["train_acc"], abs=0.2
        )  # a borderline argmax may flip
        assert b["test_acc"] == pytest.approx(a["test_acc"], abs=0.6)
        assert b["alignment"] == pytest.approx(a["alignment"], abs=1e-3)
    assert two["trainable_params"] == one["trainable_params"]
    assert not list((tmp_path / "two").glob("*.tmp"))  # only rank 0 wrote, and completely
