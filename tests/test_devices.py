"""GPU slot claims: lock files spread runs over GPUs, free on exit, and wait when every slot is taken."""

import subprocess
import sys
import textwrap
import time

import pytest

from bench.run.devices import claim_slot


def test_claims_spread_over_gpus_then_fill_slots(tmp_path):
    handles = [claim_slot(2, 2, folder=tmp_path) for _ in range(4)]
    assert [gpu for gpu, _ in handles] == [0, 1, 0, 1]  # least-loaded GPU first
    handles[2][1].close()  # a run on GPU 0 ends: its slot is the next one claimed
    gpu, handle = claim_slot(2, 2, folder=tmp_path)
    assert gpu == 0
    for _, h in handles + [(gpu, handle)]:
        h.close()


def test_a_killed_run_frees_its_slot(tmp_path):
    holder = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from bench.run.devices import claim_slot
        gpu, handle = claim_slot(1, 1, folder=Path({str(tmp_path)!r}))
        print(gpu, flush=True)
        time.sleep(60)
    """)
    process = subprocess.Popen([sys.executable, "-c", holder], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().strip() == "0"
        start = time.monotonic()
        with pytest.raises(TimeoutError):  # the only slot is held: a second claim waits
            _claim_with_deadline(tmp_path, 0.5)
        assert time.monotonic() - start >= 0.5
    finally:
        process.kill()  # SIGKILL: the kernel drops the lock
        process.wait()
    gpu, handle = claim_slot(1, 1, folder=tmp_path, poll_s=0.05)
    assert gpu == 0
    handle.close()


def _claim_with_deadline(folder, seconds):
    import threading

    result = []
    thread = threading.Thread(
        target=lambda: result.append(claim_slot(1, 1, poll_s=0.05, folder=folder)), daemon=True
    )
    thread.start()
    thread.join(seconds)
    if not result:
        raise TimeoutError
    result[0][1].close()


def test_bad_slot_counts_are_refused(tmp_path):
    with pytest.raises(ValueError, match="accepted: both >= 1"):
        claim_slot(1, 0, folder=tmp_path)


def test_cli_refuses_zero_gpu_slots(tmp_path, capsys):
    from bench.cli import main

    code = main(
        [
            "train",
            "--dataset",
            "digits",
            "--arch",
            "mlp3",
            "--method",
            "bp",
            "--out",
            str(tmp_path / "r"),
            "--gpu-slots",
            "0",
        ]
    )
    assert code == 2 and "--gpu-slots 0" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
