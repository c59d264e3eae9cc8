"""Every rule that `locality: blockwise` can run resumes, in that mode, to the record of the uninterrupted
run: the contract test checks graph mode's resume for every rule; this checks blockwise mode's for every
blockwise rule (ssa's block signals; dgl's, predsim's and infopro's module losses with their auxiliary
nets), picked up from the discovered rules with no edit."""

import math

import pytest

from bench.config.spec import make_spec
from bench.method import discover
from bench.run.train import run
from tests.conftest import run_killed_in_epoch_2

BLOCKWISE = sorted(name for name, rule in discover().items() if rule.blockwise)
RECIPE = {"epochs": 2, "batch_size": 128, "probe_size": 32, "attack_subset": 0, "device": "cpu"}
TIMINGS = {
    "train_time_s",
    "images_per_s",
    "eval_time_s",
    "started",
    "peak",
    "peak_memory",
    "time_s",
}


def strip(value):
    """A record without what differs between two runs of the same spec (timings, the peak)."""
    if isinstance(value, dict):
        return {k: strip(v) for k, v in value.items() if k not in TIMINGS}
    if isinstance(value, list):
        return [strip(v) for v in value]
    return "nan" if isinstance(value, float) and math.isnan(value) else value


def test_the_local_loss_rules_are_blockwise():
    assert {"dgl", "predsim", "infopro", "ssa"} <= set(BLOCKWISE)


@pytest.mark.parametrize("rule", BLOCKWISE)
def test_a_blockwise_run_killed_in_epoch_2_resumes_to_the_uninterrupted_record(
    rule, tmp_path, monkeypatch
):
    spec = make_spec("digits", "mlp3", rule, 0, {**RECIPE, "locality": "blockwise"}, {})
    whole = run(spec, tmp_path / "whole").to_json()
    run_killed_in_epoch_2(monkeypatch, spec, tmp_path / "resumed")
    resumed = run(spec, tmp_path / "resumed").to_json()
    assert len(whole["history"]) == 2 and whole["recipe"]["locality"] == "blockwise"
    assert strip(resumed) == strip(whole), f"{rule}: the resumed blockwise run differs"
