"""The scripts read their environment as data (issue 26): scripts/gpu_run.sh refuses a bad value before
anything runs and stops its running stage with itself; slurm_single_node.sh checks its ports and
folder, the Makefile its four values; the set-up's apt-get waits while another apt-get holds the lock.
Every script here runs with stand-ins (a python, an apt-get) that record what they were asked to do."""

import os
import re
import shutil
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


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


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
        # bash cannot trap a signal ignored when it starts, and a pytest launched in the background
        # (`nohup pytest &`) hands its children SIGINT ignored: the script gets the default, as from a shell.
        preexec_fn=_default_sigint,
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


def _slurm(tmp_path: Path, command: str, **values: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    env.update({k: v.replace("PWNED", str(tmp_path / "pwned")) for k, v in values.items()})
    return subprocess.run(
        ["bash", str(SCRIPTS / "slurm_single_node.sh"), command],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    "name,value",
    [
        ("BENCH_SLURM_PORT", "a[$(touch PWNED)]"),
        ("BENCH_SLURM_PORT", "65535"),  # slurmd and slurmdbd take the next two
        ("BENCH_SLURM_PORT", "80"),
        ("BENCH_SLURM_DB_PORT", "x[$(touch PWNED)]"),
        ("BENCH_SLURM_DB_PORT", "13306 "),
        ("BENCH_SLURM_DIR", "relative/state"),
        ("BENCH_SLURM_DIR", "/tmp/with space"),
        ("BENCH_SLURM_DIR", "/tmp/x\nSlurmUser=nobody"),
        ("BENCH_SLURM_DIR", "/tmp/$(touch PWNED)"),
        ("BENCH_SLURM_DIR", "/tmp/-rf"),
    ],
)
def test_slurm_single_node_refuses_a_bad_value_before_anything_runs(tmp_path, name, value):
    result = _slurm(tmp_path, "env", **{name: value})
    assert result.returncode == 2
    shown = value.replace("PWNED", str(tmp_path / "pwned")).replace("\n", "?")
    assert result.stderr.startswith(f"slurm_single_node.sh: {name}='{shown}': accepted: ")
    assert result.stdout == "" and not (tmp_path / "pwned").exists()


def test_slurm_single_node_takes_good_values(tmp_path):
    result = _slurm(
        tmp_path, "env", BENCH_SLURM_PORT="017000", BENCH_SLURM_DIR=str(tmp_path / "state")
    )
    assert result.returncode == 0 and result.stdout == "export SLURM_CONF=/etc/slurm/slurm.conf\n"


def _apt_stubs(tmp_path: Path) -> dict:
    """A PATH whose dpkg-query finds nothing installed, whose apt-get records its arguments (and fails the
    first `update` as a held lock does), and where this user is root; the environment to run with."""
    bin_ = tmp_path / "bin"
    calls = tmp_path / "apt-calls"
    _stub(bin_, "dpkg-query", "exit 1")
    _stub(bin_, "pkg-config", "exit 1")
    _stub(bin_, "id", "echo 0")
    _stub(
        bin_,
        "apt-get",
        f'echo "$* | DEBIAN_FRONTEND=${{DEBIAN_FRONTEND:-}}" >> {calls}\n'
        f'if [[ " $* " == *" update "* ]] && [ ! -e {tmp_path}/held ]; then\n'
        f"  touch {tmp_path}/held\n"
        '  echo "E: Could not get lock /var/lib/apt/lists/lock. It is held by process 1 (apt-get)" >&2\n'
        "  exit 100\n"
        "fi",
    )
    return {
        **os.environ,
        "PATH": f"{bin_}:/usr/bin:/bin",
        "TMPDIR": str(tmp_path),
        "BENCH_SLURM": "0",
    }


def _apt_calls(tmp_path: Path) -> list[str]:
    return (tmp_path / "apt-calls").read_text().splitlines()


def test_install_system_deps_waits_for_the_apt_lock(tmp_path):
    result = subprocess.run(
        ["bash", str(SCRIPTS / "install_system_deps.sh"), "none"],
        env=_apt_stubs(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    calls = _apt_calls(tmp_path)
    lock = r"-o DPkg::Lock::Timeout=\d+ "
    assert [re.sub(lock, "", c.split(" | ")[0]) for c in calls] == [
        "update -q",  # refused: another apt-get held the lists' lock
        "update -q",
        "install -y -q --no-install-recommends pkg-config libturbojpeg0-dev libopencv-dev",
    ]
    assert calls[0].startswith("-o DPkg::Lock::Timeout=600 update")
    assert all(re.match(lock, c) for c in calls)
    assert all(c.endswith("| DEBIAN_FRONTEND=noninteractive") for c in calls)
    assert "waits up to 600 s for another apt-get or dpkg to release its lock" in result.stderr
    assert "another apt-get holds its lock; trying again in 2 s" in result.stderr


def test_slurm_install_waits_for_the_apt_lock(tmp_path):
    result = subprocess.run(
        ["bash", str(SCRIPTS / "slurm_single_node.sh"), "install"],
        env=_apt_stubs(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    calls = [c.split(" | ")[0] for c in _apt_calls(tmp_path)]
    assert [c.split()[2] for c in calls] == ["update", "update", "install"]
    assert all(c.startswith("-o DPkg::Lock::Timeout=") for c in calls)
    assert calls[2].endswith(
        "munge slurm-client slurmctld slurmd slurmdbd mariadb-server mariadb-client"
    )
    assert "another apt-get holds its lock" in (tmp_path / "bench-slurm-apt.log").read_text()


def test_apt_get_gives_up_on_other_errors_at_once(tmp_path):
    env = _apt_stubs(tmp_path)
    _stub(tmp_path / "bin", "apt-get", 'echo "E: Unable to locate package $3" >&2; exit 100')
    result = subprocess.run(
        ["bash", str(SCRIPTS / "apt_get.sh"), "install", "-y", "nosuchpackage"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 100 and "trying again" not in result.stderr


MAKE = shutil.which("make")


def _make(tmp_path: Path, *args: str, **env_values: str) -> subprocess.CompletedProcess:
    env = {**os.environ}
    env.update({k: v.replace("PWNED", str(tmp_path / "pwned")) for k, v in env_values.items()})
    args = tuple(a.replace("PWNED", str(tmp_path / "pwned")) for a in args)
    # -n: the recipes are printed, not run; make still expands them (a `$(shell ...)` would run)
    return subprocess.run(
        [MAKE, "-n", "-C", str(REPO), *args], env=env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.skipif(MAKE is None, reason="make not installed")
@pytest.mark.parametrize(
    "target,args,env_values,name",
    [
        ("run", (), {"CORES": "$(shell touch PWNED)"}, "CORES"),
        ("run", ("CORES=2;touch PWNED",), {}, "CORES"),
        ("run", ("CORES=0",), {}, "CORES"),
        ("run", ("CORES=2 3",), {}, "CORES"),
        ("run", (), {"VENV": "$(shell touch PWNED)"}, "VENV"),
        ("run", ("VENV=.venv;touch PWNED",), {}, "VENV"),
        ("run", ("VENV=-x",), {}, "VENV"),
        ("run", ("PYTHON=python3 -c 'import os'",), {}, "PYTHON"),
        ("test", (), {"BENCH_DATA_DIR": "$(touch PWNED)"}, "BENCH_DATA_DIR"),
    ],
)
def test_make_refuses_a_bad_value_before_any_recipe(tmp_path, target, args, env_values, name):
    result = _make(tmp_path, target, *args, **env_values)
    assert result.returncode == 2
    assert re.search(rf"\*\*\* {name}='.*': accepted: ", result.stderr), result.stderr
    assert "snakemake" not in result.stdout and "pytest" not in result.stdout  # no recipe
    assert not (tmp_path / "pwned").exists()


@pytest.mark.skipif(MAKE is None, reason="make not installed")
def test_make_takes_good_values():
    for cores in ("4", "all"):
        result = _make(Path("/nonexistent"), "run", f"CORES={cores}")
        assert result.returncode == 0, result.stderr
        assert f"snakemake --cores {cores} --profile profiles/default" in result.stdout
