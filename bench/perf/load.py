"""`python -m bench perf load`: a job's start-up, importing the suite and loading one dataset.

Each repeat runs in a fresh Python process, as a pipeline job does: the seconds `import bench.data`
takes, then `bench.data.load(dataset)` on the CPU. The first repeat may decode an image folder and
write its cache; later ones read the cache (the issue-6 target: a cached CIFAR-size set in < 3 s).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench.perf.common import log, write_json

# Run in the child: prints {"import_s": .., "load_s": .., "train_images": ..} as one JSON line.
CHILD = """
import json, sys, time
start = time.perf_counter()
import bench.data
imported = time.perf_counter()
data = bench.data.load(sys.argv[1], "cpu", sys.argv[2] or None)
print(json.dumps({"import_s": imported - start, "load_s": time.perf_counter() - imported,
                  "train_images": len(data.train_y)}))
"""


def run(dataset: str, data_dir: Path | None, repeats: int) -> list[dict]:
    """One row per repeat, each from a fresh process."""
    if repeats < 1:
        raise ValueError("--repeats must be >= 1")
    rows = []
    for repeat in range(repeats):
        done = subprocess.run(
            [sys.executable, "-c", CHILD, dataset, str(data_dir or "")],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            lines = done.stderr.strip().splitlines() or ["no output"]
            raise ValueError(f"loading {dataset!r} failed: {lines[-1]}")
        rows.append(
            {
                "repeat": repeat,
                "dataset": dataset,
                **json.loads(done.stdout.strip().splitlines()[-1]),
            }
        )
    return rows


def main(args) -> int:
    """CLI entry: log one line per repeat, write --out as JSON when given."""
    rows = run(args.dataset, args.data_dir, args.repeats)
    for row in rows:
        log.info(
            "%s, repeat %d: import %.2f s, load %.2f s (%d training images)",
            row["dataset"],
            row["repeat"],
            row["import_s"],
            row["load_s"],
            row["train_images"],
        )
    if args.out:
        write_json(args.out, rows)
    return 0


def add_arguments(parser) -> None:
    """The `perf load` options, for the CLI's subparser."""
    parser.add_argument(
        "--dataset", default="digits", help="dataset name (e.g. cifar10-jpeg with --data-dir)"
    )
    parser.add_argument("--data-dir", type=Path, default=None, help="where on-disk datasets live")
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes, one load each")
    parser.add_argument("--out", type=Path, default=None, help="also write the rows as JSON here")
