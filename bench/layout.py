"""Where everything lives: the repository's own paths (its root, the default config, the published
numbers), and a results folder's run layout (runs/<dataset>/<arch>/<method>/seed<seed>/) with the files
the pipeline builds beside it. The one place that spells either; it imports nothing of bench.

The Snakefile asks it for its rules' inputs and outputs (passing wildcards such as "{dataset}" as the
names, which gives Snakemake's patterns), the grid runner for each run's folder and log, and the report
wing for the records of a dataset. A results folder's paths are strings, relative when `results` is:
Snakemake matches them as text.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent  # the repository: bench/, methods/, config/
DEFAULT_CONFIG = (
    REPO / "config" / "config.yaml"
)  # read first by every config loader (and the Snakefile)
PUBLISHED = (
    REPO / "config" / "published.csv"
)  # the cited figures beside the tables (bench/report/published.py)

RUNS = "runs"
RUN = "{dataset}/{arch}/{method}/seed{seed}"  # under RUNS: one run's record.json, log.csv, checkpoint.pt
RECORD = "record.json"


@dataclass(frozen=True)
class Layout:
    """The files of one results folder."""

    results: str

    @property
    def runs(self) -> str:
        """The folder of every run's folder (what `aggregate`, `plot` and `claims` read as --runs-dir)."""
        return f"{self.results}/{RUNS}"

    def run_dir(self, dataset, arch, method, seed) -> str:
        return run_dir(self.runs, dataset, arch, method, seed)

    def record(self, dataset, arch, method, seed) -> str:
        return f"{self.run_dir(dataset, arch, method, seed)}/{RECORD}"

    def _per_run(self, kind: str, step: str, dataset, arch, method, seed, ext: str) -> str:
        return f"{self.results}/{kind}/{step}/{dataset}/{arch}/{method}/seed{seed}.{ext}"

    def log(self, step: str, *names, ext: str = "log") -> str:
        """The log of a pipeline step: logs/<step>/<name>/.../<last name>.log."""
        return "/".join([self.results, "logs", step, *map(str, names)]) + f".{ext}"

    def train_log(self, dataset, arch, method, seed) -> str:
        return self._per_run("logs", "train", dataset, arch, method, seed, "log")

    def status(self) -> str:
        """`python -m bench grid`'s outcome of every run (bench/gridrun/status.py)."""
        return f"{self.results}/status.csv"

    def benchmark(self, dataset, arch, method, seed) -> str:
        return self._per_run("benchmarks", "train", dataset, arch, method, seed, "tsv")

    def table(self, dataset, ext, paper: bool = False) -> str:
        return f"{self._outputs(paper)}/{dataset}_table.{ext}"

    def figure(self, dataset, name, ext, paper: bool = False) -> str:
        return f"{self._outputs(paper)}/figures/{dataset}_{name}.{ext}"

    def claims(self) -> str:
        return f"{self.results}/paper/claims.md"

    def sweep(self, dataset) -> str:
        """The folder of a dataset's sweep report: findings.md, its tables and figures."""
        return f"{self.results}/sweep/{dataset}"

    def _outputs(self, paper: bool) -> str:
        return f"{self.results}/paper" if paper else self.results


def run_dir(runs_dir: str | Path, dataset, arch, method, seed) -> str:
    """One run's folder under a runs folder."""
    return f"{runs_dir}/" + RUN.format(dataset=dataset, arch=arch, method=method, seed=seed)


def record_path(runs_dir: str | Path, dataset, arch, method, seed) -> Path:
    return Path(run_dir(runs_dir, dataset, arch, method, seed), RECORD)


def find_records(runs_dir: str | Path, dataset: str) -> Iterator[tuple[Path, str, str, int | None]]:
    """(path, arch, method, seed) of every record of `dataset` under `runs_dir`, in sorted order; the seed
    is None where the folder's name is no seed<integer>."""
    for path in sorted(Path(runs_dir, dataset).glob(f"*/*/seed*/{RECORD}")):
        arch, method, folder = path.parts[-4:-1]
        seed = folder.removeprefix("seed")
        yield path, arch, method, int(seed) if seed.isdigit() else None
