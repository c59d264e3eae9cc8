"""Reliability: runs killed at any moment resume to the same record, pipelines never share files, a
diverged run is a result, nothing executes code from data or config, records say which code made them."""

from __future__ import annotations

import ast
import json
import logging
import os
import random
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

from bench import files
from bench.layout import REPO
from bench.run import provenance as provenances

SNAKEFILE = REPO / "Snakefile"
TESTS = Path(__file__).resolve().parent
TIMING_KEYS = {
    "train_time_s",
    "images_per_s",
    "eval_time_s",
    "time_s",
    "started",
    "peak",
    "peak_memory",
}  # measurements, not results
EPOCHS = 3
STEPS_PER_EPOCH = (
    1437 // 64
)  # digits: 1,437 training images in batches of 64, the partial last batch dropped
RECIPE = {"epochs": EPOCHS, "batch_size": 64, "probe_size": 64, "device": "cpu"}
# ssa and dfa train normally (they are killed and resumed); bp's recipe makes its loss NaN in epoch 1.
GRID = [
    "seeds=[0]",
    f"epochs={EPOCHS}",
    "default_datasets=[digits]",
    "datasets={digits: {archs: [mlp3], methods: [ssa, dfa, bp], "
    "recipe: {batch_size: 64, probe_size: 64, device: cpu}, "
    "method_recipe: {bp: {optimizer: sgd, lr: 1.0e+12, momentum: 0.0}}}}",
]
TABLE = "results/digits_table.csv"
RUN_FILES = {"record.json", "log.csv", "checkpoint.pt"}
needs_linux = pytest.mark.skipif(
    sys.platform != "linux", reason="the test hooks read /proc/self/fd"
)


def strip_timings(obj):
    if isinstance(obj, dict):
        return {k: strip_timings(v) for k, v in obj.items() if k not in TIMING_KEYS}
    if isinstance(obj, list):
        return [strip_timings(v) for v in obj]
    return obj


# ---- hooks inside the pipeline's training processes --------------------------------------------
# A `sitecustomize` on PYTHONPATH calls install_hooks() in every `python -m bench train` that a test's
# pipeline starts: each process lists the files it writes, and pauses where the test says (announcing
# its pid), so that the test can SIGKILL it at that exact point.

SITECUSTOMIZE = """import os, sys, traceback
if sys.orig_argv[1:4] == ["-m", "bench", "train"]:
    sys.path.insert(0, {tests!r})
    try:
        import test_reliability
        test_reliability.install_hooks()
    except BaseException:
        traceback.print_exc()
        os._exit(3)  # a run without its hooks would never pause: fail at once instead
"""
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def install_hooks() -> None:
    """Trace this process's writes to $BENCH_TEST_HOOKS/writes-<pid>.txt; pause as $BENCH_TEST_PAUSE says.

    BENCH_TEST_PAUSE maps a method to ["step", n] (pause after the n-th optimizer step of the process)
    or ["checkpoint", k] (pause while writing the k-th checkpoint, its temporary file cut to half).
    """
    folder = Path(os.environ["BENCH_TEST_HOOKS"])
    argv = sys.orig_argv
    method, out = argv[argv.index("--method") + 1], os.path.abspath(argv[argv.index("--out") + 1])
    trace = open(folder / f"writes-{os.getpid()}.txt", "w", buffering=1)
    trace.write(out + "\n")

    def audit(event: str, args: tuple) -> None:
        paths = []
        if event == "open" and not isinstance(args[0], int):
            mode, flags = args[1], args[2] or 0
            if (mode and set(mode) & set("wax+")) or (not mode and flags & WRITE_FLAGS):
                paths = [args[0]]
        elif event in ("os.rename", "os.remove", "os.mkdir", "os.rmdir", "os.truncate", "os.chmod"):
            paths = [a for a in args[:2] if isinstance(a, (str, bytes, os.PathLike))]
        for path in paths:
            trace.write(os.path.abspath(os.fsdecode(path)) + "\n")

    sys.addaudithook(audit)
    where, count = json.loads(os.environ.get("BENCH_TEST_PAUSE", "{}")).get(method, (None, 0))

    def pause() -> None:
        (folder / f"paused-{method}").write_text(str(os.getpid()))
        while True:
            time.sleep(1)

    if where == "step":
        steps = [0]

        def after_step(optimizer, args, kwargs):
            steps[0] += 1
            if steps[0] == count:
                pause()

        register_optimizer_step_post_hook(after_step)
    elif where == "checkpoint":
        real_fsync, seen = os.fsync, [0]

        def fsync(fd):
            if os.path.basename(os.readlink(f"/proc/self/fd/{fd}")).startswith(".checkpoint.pt."):
                seen[0] += 1
                if seen[0] == count:
                    os.ftruncate(
                        fd, os.fstat(fd).st_size // 2
                    )  # the kill lands in the middle of the write
                    pause()
            return real_fsync(fd)

        os.fsync = fsync


def hook_env(hooks: Path, pause: dict | None = None) -> dict:
    site = hooks / "site"
    site.mkdir(parents=True, exist_ok=True)
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE.format(tests=str(TESTS)))
    path = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    env = os.environ | {"PYTHONPATH": path, "BENCH_TEST_HOOKS": str(hooks), "OMP_NUM_THREADS": "1"}
    return env | {"BENCH_TEST_PAUSE": json.dumps(pause)} if pause else env


def snakemake_command(workdir: Path, *args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(SNAKEFILE),
        "-d",
        str(workdir),
        "--cores",
        "3",
        "--config",
        *GRID,
        "--",
        *args,
    ]


def run_snakemake(workdir: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        snakemake_command(workdir, *args),
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
        cwd=REPO,
    )


def wait_for_pauses(
    hooks: Path, methods: list[str], process: subprocess.Popen, timeout_s: float = 600
) -> dict:
    """{method: pid} once every method's process has paused; fails if the pipeline ends first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = {m: hooks / f"paused-{m}" for m in methods}
        if all(p.is_file() and p.read_text() for p in found.values()):
            return {m: int(p.read_text()) for m, p in found.items()}
        if process.poll() is not None:
            pytest.fail(
                f"the pipeline ended before its runs paused:\n{process.stdout.read()[-3000:]}"
            )
        time.sleep(0.2)
    process.kill()
    pytest.fail(f"runs did not pause within {timeout_s} s")


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def run_dir(workdir: Path, method: str) -> Path:
    return workdir / "results" / "runs" / "digits" / "mlp3" / method / "seed0"


@dataclass
class Interrupted:
    workdir: Path
    hooks: Path
    kill_step: int  # ssa was killed after this optimizer step (epoch 2 or 3)
    kill_checkpoint: int  # dfa was killed while writing this checkpoint (epoch 2 or 3)
    first: str  # output of the pipeline whose runs were killed
    first_code: int
    second: subprocess.CompletedProcess  # the same command, started while the first one ran
    unchanged_by_second: bool
    temps_after_kill: dict  # method -> hidden temporary files in its run folder after the kill
    rerun: subprocess.CompletedProcess
    references: dict  # method -> record of an uninterrupted `bench train` with the same seed


def reference_runs(folder: Path, methods: list[str]) -> dict:
    """Uninterrupted runs of `methods` with the grid's recipe, side by side, one thread each."""
    sets = [x for key, value in RECIPE.items() for x in ("--set", f"{key}={value}")]
    processes = {
        m: subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench",
                "train",
                "--dataset",
                "digits",
                "--arch",
                "mlp3",
                "--method",
                m,
                "--seed",
                "0",
                "--out",
                str(folder / m),
                *sets,
            ],
            env=os.environ | {"OMP_NUM_THREADS": "1"},
            stderr=subprocess.PIPE,
            text=True,
        )
        for m in methods
    }
    for m, process in processes.items():
        assert process.wait(timeout=600) == 0, process.stderr.read()[-2000:]
    return {m: json.loads((folder / m / "record.json").read_text()) for m in methods}


def _text(path: Path) -> str:
    return path.read_text() if path.is_file() else ""


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory) -> Interrupted:
    """One pipeline (ssa, dfa, bp on digits, --cores 3) whose ssa and dfa runs are SIGKILLed, then rerun.

    ssa is killed after a random optimizer step of epoch 2 or 3, dfa in the middle of writing its 2nd or
    3rd checkpoint. While both wait to be killed, the same command is started on the same folder.
    """
    if sys.platform != "linux":
        pytest.skip("the test hooks read /proc/self/fd")
    base = tmp_path_factory.mktemp("reliability")
    workdir, hooks = base / "work", base / "hooks"
    draw = random.Random()
    kill_step = draw.randint(STEPS_PER_EPOCH + 1, EPOCHS * STEPS_PER_EPOCH)
    kill_checkpoint = draw.randint(2, EPOCHS)
    references = reference_runs(base / "reference", ["ssa", "dfa"])
    pause = {"ssa": ["step", kill_step], "dfa": ["checkpoint", kill_checkpoint]}
    first = subprocess.Popen(
        snakemake_command(workdir, TABLE),
        env=hook_env(hooks, pause),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for_pauses(hooks, ["ssa", "dfa"], first)
        bp_record = run_dir(workdir, "bp") / "record.json"
        bp_log = workdir / "results" / "logs" / "train" / "digits" / "mlp3" / "bp" / "seed0.log"
        bp_benchmark = (
            workdir / "results" / "benchmarks" / "train" / "digits" / "mlp3" / "bp" / "seed0.tsv"
        )
        # bp ends by itself (diverged) before the kills; its last log line comes after its record, and
        # Snakemake's bookkeeping of the finished job (its benchmark file, the outputs' times) after that
        while first.poll() is None and not (
            bp_record.is_file() and ": status " in _text(bp_log) and bp_benchmark.is_file()
        ):
            time.sleep(0.2)
        time.sleep(1.0)  # the rest of that bookkeeping, which writes into results/ too
        before = snapshot(workdir / "results")
        second = run_snakemake(workdir, hook_env(hooks), TABLE)
        unchanged = snapshot(workdir / "results") == before
    finally:  # the kill of the test; on a failure above, it also ends whatever still waits
        for paused in hooks.glob("paused-*"):
            os.kill(int(paused.read_text()), signal.SIGKILL)
        first_output = first.communicate(timeout=120)[0]
    temps = {m: sorted(p.name for p in run_dir(workdir, m).glob(".*.tmp")) for m in ("ssa", "dfa")}
    rerun = run_snakemake(workdir, hook_env(hooks), TABLE)
    return Interrupted(
        workdir,
        hooks,
        kill_step,
        kill_checkpoint,
        first_output,
        first.returncode,
        second,
        unchanged,
        temps,
        rerun,
        references,
    )


def test_killed_runs_resume_from_their_last_checkpoint_to_the_uninterrupted_record(interrupted):
    where = f"(ssa killed after step {interrupted.kill_step}, dfa in checkpoint {interrupted.kill_checkpoint})"
    assert interrupted.first_code != 0, where
    assert interrupted.rerun.returncode == 0, interrupted.rerun.stderr[-3000:]
    assert interrupted.temps_after_kill["dfa"], f"no half-written checkpoint was left {where}"
    resumed_from = {
        "ssa": (interrupted.kill_step - 1) // STEPS_PER_EPOCH,
        "dfa": interrupted.kill_checkpoint - 1,
    }
    for method, epoch in resumed_from.items():
        folder = run_dir(interrupted.workdir, method)
        log = (
            interrupted.workdir
            / "results"
            / "logs"
            / "train"
            / "digits"
            / "mlp3"
            / method
            / "seed0.log"
        ).read_text()
        checkpoint = folder.relative_to(interrupted.workdir) / "checkpoint.pt"
        assert f"resuming {method} from {checkpoint} (epoch {epoch})" in log, where
        record = json.loads((folder / "record.json").read_text())
        assert record["status"] == "ok" and record["epochs"] == EPOCHS
        assert strip_timings(record) == strip_timings(interrupted.references[method]), where
        assert {p.name for p in folder.iterdir()} == RUN_FILES, (
            where
        )  # the half-written temp file is gone


def test_second_pipeline_on_the_same_folder_is_refused_and_changes_nothing(interrupted):
    second = interrupted.second
    assert second.returncode != 0
    assert "cannot be locked" in second.stdout + second.stderr
    assert interrupted.unchanged_by_second


def test_parallel_jobs_write_only_into_their_own_run_folder(interrupted):
    workdir = str(interrupted.workdir)
    traces = sorted(interrupted.hooks.glob("writes-*.txt"))
    for trace in traces:
        out, *written = trace.read_text().splitlines()
        inside = [p for p in written if p.startswith(workdir + os.sep)]
        assert any(p.endswith(f"{os.sep}checkpoint.pt") for p in inside), (
            f"{trace.name} traced no checkpoint"
        )
        strays = [p for p in inside if p != out and not p.startswith(out + os.sep)]
        assert not strays, f"the run writing {out} also wrote {strays}"
    # 3 runs in the first pipeline (side by side), ssa and dfa again in the rerun; the refused one ran none
    assert len(traces) == 5


def test_a_diverged_run_is_a_result_and_the_grid_goes_on(interrupted):
    record = json.loads((run_dir(interrupted.workdir, "bp") / "record.json").read_text())
    assert (
        record["status"] == "diverged"
        and record["epochs"] == 1
        and record["history"][0]["train_loss"] is None
    )
    table = (interrupted.workdir / TABLE).read_text().splitlines()
    bp_row = next(line for line in table if line.startswith("mlp3,bp,"))
    assert bp_row.endswith(",diverged 1/1,")  # status, then an empty published column
    md = (interrupted.workdir / "results" / "digits_table.md").read_text()
    assert f"| mlp3 | bp | 0/1 | {EPOCHS} | — |" in md and "diverged 1/1" in md


def test_diverged_run_exits_0_with_a_record(tmp_path, caplog):
    from bench.cli import main

    caplog.set_level(logging.INFO, logger="bench")
    out = tmp_path / "runs" / "digits" / "mlp3" / "bp" / "seed0"
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
            str(out),
            "--set",
            "optimizer=sgd",
            "--set",
            "lr=1e12",
            "--set",
            "momentum=0",
            "--set",
            "epochs=4",
            "--set",
            "batch_size=64",
            "--set",
            "probe_size=64",
        ]
    )
    assert code == 0
    assert "bp diverged in epoch 1" in caplog.text and "status diverged" in caplog.text
    record = json.loads((out / "record.json").read_text())
    assert (record["status"], record["epochs"], record["epochs_planned"]) == ("diverged", 1, 4)


# ---- atomic, checked and locked files -----------------------------------------------------------


def test_write_atomic_leaves_readable_files_and_removes_temps_of_killed_writers(tmp_path):
    target = tmp_path / "record.json"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = (
        tmp_path / f".record.json.{dead.pid}.abc123.tmp"
    )  # what a writer killed mid-write leaves
    live = tmp_path / f".record.json.{os.getppid()}.def456.tmp"  # a writer that still runs
    for temp in (stale, live):
        temp.write_bytes(b"{half")
    files.write_atomic(target, b"{}\n")
    assert target.read_bytes() == b"{}\n"
    assert not stale.exists() and live.exists()
    assert target.stat().st_mode & 0o777 == 0o666 & ~files._UMASK  # not mkstemp's owner-only 0600


def test_write_atomic_keeps_the_old_file_when_the_write_fails(tmp_path, monkeypatch):
    target = tmp_path / "checkpoint.pt"
    target.write_bytes(b"old")

    def no_space(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", no_space)
    with pytest.raises(OSError, match="No space left"):
        files.write_atomic(target, b"new")
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == [
        "checkpoint.pt"
    ]


def test_checkpoint_integrity_check_finds_a_flipped_bit_that_torch_load_misses(tmp_path):
    path = tmp_path / "checkpoint.pt"
    torch.save({"model": {"w": torch.arange(50_000, dtype=torch.float32)}}, path)
    files.check_torch_file(path)  # a whole file passes
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    assert torch.load(path, weights_only=True)["model"]["w"].shape == (
        50_000,
    )  # torch loads it silently
    with pytest.raises(ValueError, match=f"{path} fails its integrity check: member .*data/0"):
        files.check_torch_file(path)
    path.write_bytes(bytes(data[: len(data) // 3]))
    with pytest.raises(ValueError, match=f"{path} is not a whole torch checkpoint"):
        files.check_torch_file(path)


def test_folder_lock_refuses_a_second_writer_naming_the_folder(tmp_path):
    with files.folder_lock(tmp_path):
        with pytest.raises(ValueError, match=f"run folder {tmp_path} is in use by another process"):
            with files.folder_lock(tmp_path):
                pass
    with files.folder_lock(tmp_path):  # released when the first holder is done
        pass


# ---- provenance ---------------------------------------------------------------------------------


def test_provenance_names_the_git_commit_and_whether_the_tree_was_dirty():
    git = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True)
    if git.returncode != 0:
        pytest.skip("not a git checkout")
    status = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        cwd=REPO,
        capture_output=True,
        text=True,
    ).stdout
    found = provenances.provenance(torch.device("cpu"))
    assert found["git_commit"] == git.stdout.strip() and re.fullmatch(
        r"[0-9a-f]{40}", found["git_commit"]
    )
    assert found["git_dirty"] is bool(status.strip())
    assert provenances.code_version().startswith(found["git_commit"])


def test_provenance_outside_a_git_checkout_is_none_and_never_fails(tmp_path, monkeypatch):
    monkeypatch.setattr(provenances, "REPO", tmp_path)
    found = provenances.provenance(torch.device("cpu"))
    assert found["git_commit"] is None and found["git_dirty"] is None
    assert provenances.code_version() is None
    monkeypatch.setenv("PATH", str(tmp_path))  # no git at all
    assert (
        provenances.provenance(torch.device("cpu"))["git_commit"] is None
        and provenances.code_version() is None
    )


def test_code_version_changes_with_every_edit_of_a_dirty_tree(monkeypatch):
    diffs = iter(["", "--- a/bench/x.py\n+one", "--- a/bench/x.py\n+two"])
    monkeypatch.setattr(
        provenances, "_git", lambda *args: "c0ffee" if args[0] == "rev-parse" else next(diffs)
    )
    versions = [provenances.code_version() for _ in range(3)]
    assert versions[0] == "c0ffee" and versions[1].startswith("c0ffee+dirty.")
    assert len(set(versions)) == 3


# ---- nothing executes code from data or config --------------------------------------------------

UNSAFE = "unsafe"


def unsafe_calls(source: str) -> list[str]:
    """Calls that can run code from a file: pickle loads (but an Unpickler subclass with find_class),
    torch.load without weights_only=True, yaml.load without SafeLoader, numpy allow_pickle, eval/exec."""
    found = []
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            bases = [ast.unparse(b) for b in node.bases]
            methods = {n.name for n in node.body if isinstance(n, ast.FunctionDef)}
            if any(b.endswith("Unpickler") for b in bases) and "find_class" not in methods:
                found.append(
                    f"line {node.lineno}: Unpickler subclass {node.name} without find_class"
                )
        if not isinstance(node, ast.Call):
            continue
        name = ast.unparse(node.func)
        keywords = {k.arg: ast.unparse(k.value) for k in node.keywords}
        if re.fullmatch(
            r"(c?pickle|dill|joblib|marshal|shelve|pd|pandas)\.(loads?|open|Unpickler|read_pickle)",
            name,
        ):
            found.append(f"line {node.lineno}: {name}")
        elif name in (
            "eval",
            "exec",
            "torch.jit.load",
            "yaml.unsafe_load",
            "yaml.full_load",
            "yaml.load_all",
        ):
            found.append(f"line {node.lineno}: {name}")
        elif name == "torch.load" and keywords.get("weights_only") != "True":
            found.append(f"line {node.lineno}: torch.load without weights_only=True")
        elif name == "yaml.load" and keywords.get("Loader") not in (
            "yaml.SafeLoader",
            "yaml.CSafeLoader",
        ):
            found.append(f"line {node.lineno}: yaml.load without SafeLoader")
        elif (
            name.endswith(("np.load", "numpy.load"))
            and keywords.get("allow_pickle", "False") != "False"
        ):
            found.append(f"line {node.lineno}: {name} with allow_pickle")
    return found


def test_the_unsafe_call_scanner_finds_each_kind():
    bad = (
        "import pickle, torch, yaml, numpy as np\npickle.load(f)\ntorch.load(p)\ntorch.load(p, weights_only=False)\n"
        "yaml.load(t)\nyaml.load(t, Loader=yaml.Loader)\nnp.load(p, allow_pickle=True)\neval(s)\n"
        "class U(pickle.Unpickler):\n    pass\n"
    )
    assert len(unsafe_calls(bad)) == 8
    good = (
        "torch.load(p, map_location='cpu', weights_only=True)\nyaml.safe_load(t)\n"
        "yaml.load(t, Loader=yaml.SafeLoader)\nnp.load(p)\n"
        "class U(pickle.Unpickler):\n    def find_class(self, m, n):\n        raise Error\n"
    )
    assert unsafe_calls(good) == []


def test_no_code_in_bench_or_methods_loads_pickles_or_unsafe_yaml():
    files = sorted(
        [*REPO.glob("bench/**/*.py"), *REPO.glob("methods/**/*.py"), *REPO.glob("scripts/**/*.py")]
    )
    assert len(files) > 20
    found = {
        str(f.relative_to(REPO)): calls for f in files if (calls := unsafe_calls(f.read_text()))
    }
    assert found == {}
    snakefile = SNAKEFILE.read_text()  # Snakemake syntax, not Python: a plain search
    assert not re.search(
        r"pickle|torch\.load|yaml\.(load|unsafe_load|full_load)\(|\beval\(|\bexec\(", snakefile
    )


def test_cifar_reader_is_the_only_unpickler_and_refuses_anything_but_arrays(tmp_path):
    import pickle

    from bench.data.cifar import read_pickle

    users = [
        str(f.relative_to(REPO))
        for f in sorted(REPO.glob("bench/**/*.py"))
        if "Unpickler" in f.read_text()
    ]
    assert users == ["bench/data/cifar.py"]
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({"data": subprocess.Popen, "labels": []}, protocol=2))
    with pytest.raises(ValueError, match=r"is not a CIFAR pickle: refusing to load \w+\.Popen"):
        read_pickle(path)
