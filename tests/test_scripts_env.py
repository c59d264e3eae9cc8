"""The scripts read their environment as data (issue 26): scripts/gpu_run.sh refuses a bad value before
anything runs and stops its running stage with itself; slurm_single_node.sh checks its ports and
folder, the Makefile its four values; the set-up's apt-get waits while another apt-get holds the lock.
Every script here runs with stand-ins (a python, an apt-get) that record what they were asked to do."""

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = REPO / "scripts"


def _stub(folder: Path, name: str, body: str) -> Path:
    """An executable bash script `folder/name` running `body`."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(f"#!/usr/bin/env bash\n{body}\n")
    path.chmod(0o755)
    return path


def _gpu_env(tmp_path: Path, python: Path, **values: str) -> dict:
    """gpu_run.sh's CPU dry-run environment with `values` over it (PWNED: a file a crafted value touches)."""
    env = {
        **os.environ,
        "PYTHON": str(python),
        "DEVICE": "cpu",
        "DATA_DIR": str(tmp_path / "data"),
        "RESULTS": str(tmp_path / "results"),
        "ARCHS": "smallconv",
        "METHODS": "bp dfa",
        "SEEDS": "0",
        "EPOCHS": "1",
        "JOBS": "2",
        "PERF_STEPS": "2",
        "BATCH": "16",
        "GRID_DEADLINE": "240",
    }
    env.update({k: v.replace("PWNED", str(tmp_path / "pwned")) for k, v in values.items()})
    return env


BAD_GPU_VALUES = [
    ("GRID_DEADLINE", "5m"),
    ("GRID_DEADLINE", "a[$(touch PWNED)]"),
    ("GRID_DEADLINE", "0"),
    ("GRID_DEADLINE", "1e3"),
    ("JOBS", "0"),
    ("JOBS", "2; touch PWNED"),
    ("JOBS", "x[$(touch PWNED)]"),
    ("EPOCHS", "autoo"),
    ("EPOCHS", "-5"),
    ("EPOCHS", "2.5"),
    ("MAX_EPOCHS", "0"),
    ("MAX_EPOCHS", "a[$(touch PWNED)]"),
    ("PACKING_GAIN", "0"),
    ("PACKING_GAIN", "nan"),
    ("PACKING_GAIN", "1e2"),
    ("PACKING_GAIN", "-4"),
    ("PERF_STEPS", "a[$(touch PWNED)]"),
    ("BATCH", "12O"),
    ("BATCH", "99999999999"),
    ("SEEDS", "0 -1"),
    ("SEEDS", "1.5"),
    ("SEEDS", "a[$(touch PWNED)]"),
    ("ARCHS", "smallconv *"),
    ("ARCHS", "$(touch PWNED)"),
    ("METHODS", "--results=/tmp"),
    ("METHODS", "bp;touch PWNED"),
    ("METHODS", "bp\n$(touch PWNED)"),
    ("PERF_METHODS", "bp dfa`touch PWNED`"),
    ("DATASET", "cifar10-jpeg digits"),
    ("DATASET", "../x"),
    ("DEVICE", "gpu"),
    ("DEVICE", "cuda;touch PWNED"),
    ("DETERMINISTIC", "yes"),
    ("EXTRA_SETS", "lr"),
    ("EXTRA_SETS", "lr=$(touch PWNED)"),
    ("EXTRA_SETS", "--epochs=1"),
    ("RESULTS", "RESULTS_PATH/-results"),
    ("OUT", "RESULTS_PATH/out\nx"),
]


@pytest.mark.parametrize("name,value", BAD_GPU_VALUES)
def test_gpu_run_refuses_a_bad_value_before_anything_runs(tmp_path, name, value):
    calls = tmp_path / "calls"
    python = _stub(tmp_path / "bin", "python", f'echo "$*" >> {calls}; exit 1')
    value = value.replace("RESULTS_PATH", str(tmp_path))
    env = _gpu_env(tmp_path, python, **{name: value})
    result = subprocess.run(
        ["bash", str(SCRIPTS / "gpu_run.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    shown = env[name].replace("\n", "?")
    assert result.stderr.startswith(f"gpu_run.sh: {name}='{shown}': accepted: ")
    assert result.stderr.count("\n") == 1 and result.stdout == ""  # one line
    assert not calls.exists()  # no python ran
    assert not (tmp_path / "pwned").exists()  # the crafted value ran nothing
    assert not (tmp_path / "results").exists() and not (tmp_path / "-results").exists()


def test_gpu_run_says_what_a_number_accepts(tmp_path):
    python = _stub(tmp_path / "bin", "python", "exit 1")
    messages = {}
    for name, value in (("GRID_DEADLINE", "5m"), ("EPOCHS", "x"), ("PACKING_GAIN", "0")):
        env = _gpu_env(tmp_path, python, **{name: value})
        result = subprocess.run(
            ["bash", str(SCRIPTS / "gpu_run.sh")], env=env, capture_output=True, text=True
        )
        messages[name] = result.stderr.strip().split(": accepted: ")[1]
    assert messages == {
        "GRID_DEADLINE": "a whole number from 1 to 86400 (digits only)",
        "EPOCHS": "auto or a whole number from 1 to 100000 (digits only)",
        "PACKING_GAIN": "a number > 0 of digits and at most one '.', such as 4 or 2.5",
    }


def _gone(pid: int, within_s: float) -> bool:
    """Whether process `pid` has ended (or is a zombie nobody reaped yet) within `within_s` seconds."""
    end = time.monotonic() + within_s
    while time.monotonic() < end:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state == "Z":
            return True
        time.sleep(0.1)
    return False


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc")
@pytest.mark.parametrize("signum,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_to_gpu_run_stops_its_running_stage(tmp_path, signum, code):
    marker = tmp_path / "stage.pid"
    # The device stage's torch line is the stand-in's cue: it writes its pid and stays (the stage's limit
    # is 15 s); every other call fails at once.
    python = _stub(
        tmp_path / "bin",
        "python",
        f'case "${{2:-}}" in "import torch;"*) echo $$ > {marker}.tmp; mv {marker}.tmp {marker};'
        " exec sleep 300;; esac; exit 1",
    )
    env = _gpu_env(tmp_path, python)
    script = subprocess.Popen(
        ["bash", str(SCRIPTS / "gpu_run.sh")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
        start_new_session=True,
    )
    pid = None
    try:
        end = time.monotonic() + 60
        while not marker.exists() and time.monotonic() < end and script.poll() is None:
            time.sleep(0.1)
        assert marker.exists(), "the device stage never started"
        pid = int(marker.read_text())
        script.send_signal(signum)
        out, _ = script.communicate(timeout=60)
        assert script.returncode == code, out[-2000:]
        assert f"== SIG{signum.name[3:]}: stopping the device stage; exit {code}" in out
        assert _gone(pid, within_s=10)  # the stage's own process, not only the script
        assert "== perf" not in out  # no later stage started
    finally:
        if script.poll() is None:
            os.killpg(script.pid, signal.SIGKILL)
            script.wait()
        if pid is not None and not _gone(pid, 0.1):
            os.kill(pid, signal.SIGKILL)
