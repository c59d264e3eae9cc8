"""A real `kill -9` in the middle of epoch 2, then the same command again: every local-loss rule (dgl, predsim,
infopro, pepita) in graph mode, and each of them that `locality: blockwise` runs in that mode too, resumes
from its epoch-1 checkpoint to the record of the uninterrupted run.

tests/test_blockwise_resume.py interrupts in-process (KeyboardInterrupt as epoch 2 starts); here the
process gets SIGKILL after an optimizer step inside epoch 2, with no chance to clean up, so the
auxiliary nets, their optimizer state and the per-module losses must all come back from the checkpoint.
All runs of a phase go side by side (one thread each), to keep the test under a minute on 2 cores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.layout import REPO
from bench.method import get_method
from tests.test_blockwise_resume import strip  # a record without timings, the peak and NaN != NaN

LOCAL_RULES = ("dgl", "predsim", "infopro", "pepita")
# A third part, "options": BioTorch's layer options too (the weight rescale after each optimizer step,
# whose norms a resumed run must keep from the fresh init, and the gradient clamp), on pepita, whose two
# forwards per step the in-forward rescale used to break.
LAYER_OPTIONS = {"constrain_weights": "true", "grad_clip": "0.5"}
CASES = [(rule, "graph") for rule in LOCAL_RULES] + [
    (rule, "blockwise") for rule in LOCAL_RULES if get_method(rule).blockwise
]
CASES += [("pepita", "graph", "options")]
SETS = {"epochs": 2, "batch_size": 128, "probe_size": 32, "attack_subset": 0, "device": "cpu"}
KILL_AFTER_STEP = 16  # inside epoch 2

# Loaded by every `python -m bench train` these tests start (PYTHONPATH): after the optimizer step
# BENCH_TEST_KILL_AFTER, the process SIGKILLs itself, exactly there, with nothing flushed or closed.
SITECUSTOMIZE = """import os, signal, sys
if sys.orig_argv[1:4] == ["-m", "bench", "train"] and os.environ.get("BENCH_TEST_KILL_AFTER"):
    from torch.optim.optimizer import register_optimizer_step_post_hook
    steps, limit = [0], int(os.environ["BENCH_TEST_KILL_AFTER"])

    def after_step(optimizer, args, kwargs):
        steps[0] += 1
        if steps[0] == limit:
            os.kill(os.getpid(), signal.SIGKILL)

    register_optimizer_step_post_hook(after_step)
"""


def train(case: tuple[str, ...], out: Path, env: dict) -> subprocess.Popen:
    rule, locality, *options = case
    sets = {**SETS, "locality": locality, **(LAYER_OPTIONS if options else {})}
    sets = [x for key, value in sets.items() for x in ("--set", f"{key}={value}")]
    command = [sys.executable, "-m", "bench", "train", "--dataset", "digits", "--arch", "mlp3"]
    command += ["--method", rule, "--seed", "0", "--out", str(out), *sets]
    return subprocess.Popen(command, cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)


def finish(processes: dict) -> dict:
    """{case: (return code, stderr) } once every process has ended."""
    return {case: (p.wait(timeout=600), p.stderr.read()) for case, p in processes.items()}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """{case: (uninterrupted record, resumed record, killed run's return code, resumed run's log)}."""
    if sys.platform != "linux":
        pytest.skip("SIGKILL and the optimizer-step hook are tested on Linux")
    base = tmp_path_factory.mktemp("kill_resume")
    site = base / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    path = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    env = os.environ | {"PYTHONPATH": path, "OMP_NUM_THREADS": "1"}
    killing = env | {"BENCH_TEST_KILL_AFTER": str(KILL_AFTER_STEP)}
    env.pop("BENCH_TEST_KILL_AFTER", None)
    folder = {case: base / "-".join(case) for case in CASES}
    first = {("whole", *case): train(case, folder[case] / "whole", env) for case in CASES}
    first |= {("killed", *case): train(case, folder[case] / "resumed", killing) for case in CASES}
    ended = finish(first)
    for case in CASES:
        code, err = ended[("whole", *case)]
        assert code == 0, f"{case}: the uninterrupted run failed:\n{err}"
    resumed = finish({case: train(case, folder[case] / "resumed", env) for case in CASES})
    result = {}
    for case in CASES:
        code, err = resumed[case]
        assert code == 0, f"{case}: the resumed run failed:\n{err}"
        records = [
            json.loads((folder[case] / f / "record.json").read_text()) for f in ("whole", "resumed")
        ]
        result[case] = (*records, ended[("killed", *case)][0], err)
    return result


@pytest.mark.parametrize("case", CASES, ids=["-".join(c) for c in CASES])
def test_a_local_rule_killed_by_sigkill_in_epoch_2_resumes_to_the_uninterrupted_record(runs, case):
    whole, resumed, killed_code, log = runs[case]
    assert killed_code == -9, f"{case}: the run was not killed (return code {killed_code})"
    # from epoch 1's checkpoint, not from scratch (which would give the same record too)
    assert f"resuming {case[0]} from" in log and "(epoch 1)" in log, log
    assert whole["recipe"]["locality"] == case[1] and len(whole["history"]) == 2
    assert whole["recipe"]["constrain_weights"] == ("options" in case)
    assert strip(resumed) == strip(whole), f"{case}: the resumed run's record differs"


def test_every_local_rule_is_killed_in_both_modes_where_it_has_them():
    assert {("dgl", "blockwise"), ("predsim", "blockwise"), ("infopro", "blockwise")} <= set(CASES)
    assert {(rule, "graph") for rule in LOCAL_RULES} <= set(CASES)
