"""profiles/slurm on a real SLURM cluster, not a mock: scripts/slurm_single_node.sh starts munged, a
private MariaDB, slurmdbd, slurmctld and slurmd for a one-node cluster on this machine, Snakemake runs
the digits grid (1 epoch) through `--profile profiles/slurm`, and the jobs are looked up in the
cluster's accounting with `sacct`. Skips, with the script's reason, where the daemons cannot start
(not root, no Debian packages and no apt-get, a daemon that does not come up); BENCH_SLURM=0 skips it.

The test node has no GPU and 2 CPUs, so train's `gpu`, `cpus_per_task` and `mem_mb` are overridden
on the command line (TEST_NODE below). A command-line --set-resources replaces the profile's whole
set-resources, so the test passes the profile's own entries for every other rule and key unchanged.
"""

import os
import re
import shutil
import subprocess
import sys
import time

import pandas as pd
import pytest
import yaml

from bench.layout import REPO
from bench.measure import declare
from bench.report.table import table_columns

SCRIPT = REPO / "scripts" / "slurm_single_node.sh"
PROFILE = REPO / "profiles" / "slurm"
SNAKEFILE = REPO / "Snakefile"
SKIP = 77  # the script's exit status for "this machine cannot run the cluster"
TEST_NODE = {
    "train": {"gpu": 0, "cpus_per_task": 1, "mem_mb": 2000}
}  # no GPU; two runs side by side

pytestmark = pytest.mark.slow  # about a minute with the packages installed; runs in `make test`


def set_resources(overrides: dict) -> list[str]:
    """The profile's set-resources as RULE:KEY=VALUE arguments, with `overrides` applied per rule."""
    profile = yaml.safe_load((PROFILE / "config.yaml").read_text())
    rules = {rule: dict(values) for rule, values in profile["set-resources"].items()}
    for rule, values in overrides.items():
        rules.setdefault(rule, {}).update(values)
    return [
        f"{rule}:{key}={value}" for rule, values in rules.items() for key, value in values.items()
    ]


def run_script(command: str, timeout: int) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(SCRIPT), command], capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def slurm_conf():
    """A running single-node cluster for this module's tests; yields its SLURM_CONF, stops it after."""
    if os.environ.get("BENCH_SLURM") == "0":
        pytest.skip("BENCH_SLURM=0")
    if shutil.which("bash") is None or sys.platform != "linux":
        pytest.skip("the single-node SLURM cluster needs Linux and bash")
    pytest.importorskip(
        "snakemake_executor_plugin_slurm", reason="snakemake-executor-plugin-slurm (Python 3.11+)"
    )
    try:
        # Installs the Debian packages first where they are missing (make setup does that already).
        started = run_script("start", timeout=900)
        if started.returncode == SKIP:
            reason = (
                started.stderr.partition("SKIP: ")[2] or started.stderr
            )  # the reason and any log lines
            pytest.skip("no SLURM cluster on this machine: " + reason.strip()[:2000])
        assert started.returncode == 0, started.stdout + started.stderr
        conf = re.search(r"^export SLURM_CONF=(\S+)$", started.stdout, re.M)
        assert conf, started.stdout
        yield conf.group(1)
    finally:
        stopped = run_script("stop", timeout=300)
        print(stopped.stderr)


def sacct(env: dict, *args: str) -> list[list[str]]:
    done = subprocess.run(
        ["sacct", "-n", "-P", *args], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return [line.split("|") for line in done.stdout.splitlines() if line]


def test_digits_grid_runs_through_profiles_slurm(slurm_conf, tmp_path):
    env = os.environ | {"SLURM_CONF": slurm_conf}
    start = time.time()
    command = [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(SNAKEFILE),
        "-d",
        str(tmp_path),
        "--profile",
        str(PROFILE),
        "--set-resources",
        *set_resources(TEST_NODE),
        "--slurm-init-seconds-before-status-checks",
        "5",
        "--slurm-status-command",
        "sacct",
        "--config",
        "epochs=1",
        "seeds=[0]",
        "default_datasets=[digits]",
        "datasets={digits: {archs: [mlp3], methods: [bp, ssa]}}",
        "--",
        "all",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, env=env)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-6000:]
    print(f"snakemake --profile profiles/slurm: {time.time() - start:.0f} s")

    table = pd.read_csv(tmp_path / "results" / "digits_table.csv")
    # a real run records every declared measure and its auxiliary memory (0 without auxiliary modules):
    # each declared measure with a column, and the auxiliary column, are in the table
    declared = [m for m in declare.declared().values() if m.column]
    assert list(table.columns) == table_columns(declared, auxiliary=True)
    assert list(zip(table["arch"], table["method"])) == [("mlp3", "bp"), ("mlp3", "ssa")]
    assert (
        (table["n_ok"] == 1).all()
        and (table["status"] == "ok").all()
        and (table["epochs"] == 1).all()
    )
    assert (table["test_acc_mean"] > 30).all()  # one epoch on digits is far above chance (10%)

    # Every job went through sbatch, ran on the node and is in the accounting database.
    run_id = re.search(r"SLURM run ID: (\S+)", log)
    assert run_id, log[-3000:]
    submitted = re.findall(r"submitted with SLURM jobid (\d+)", log)
    jobs = sacct(
        env,
        "-X",
        "--name",
        run_id.group(1),
        "--format=JobIDRaw,JobName,State,ExitCode,NodeList,AllocCPUS,ReqMem,Timelimit,ReqTRES%200,Comment%200",
    )
    print("\n".join("|".join(job) for job in jobs))
    assert sorted(job[0] for job in jobs) == sorted(submitted) and len(jobs) == 4, (jobs, submitted)
    by_rule = {}
    for job in jobs:
        assert job[2] == "COMPLETED" and job[3] == "0:0", job
        rule = re.match(r"rule_([a-z_]+?)(_wildcards|$)", job[9])
        assert rule, job
        by_rule.setdefault(rule.group(1), []).append(job)
    assert sorted((rule, len(j)) for rule, j in by_rule.items()) == [
        ("figures", 1),
        ("table", 1),
        ("train", 2),
    ]
    # The profile's sizes reached sbatch: CPU-only table and figures as the profile sets them, train
    # with the test node's overrides, and no GPU anywhere.
    for rule in ("table", "figures"):
        (job,) = by_rule[rule]
        assert (job[5], job[6], job[7]) == ("1", "4000M", "00:30:00"), job
    for job in by_rule["train"]:
        assert (job[5], job[6], job[7]) == ("1", "2000M", "06:00:00"), job
    assert not any("gpu" in job[8] for job in jobs), jobs
