"""The grid runner, `python -m bench grid`: one dataset's grid without Snakemake, until a deadline.

Layers, each importing only those below it in this list:
- runner.py: the command (add_arguments, main): the runs of the grid, each `python -m bench train` in
  its own process, a few at a time, stopped at the deadline.
- epochs.py: how many epochs fit before the deadline (`--epochs auto`), from a `perf step` table.
- status.py: RESULTS/status.csv, one row per planned run with its outcome (reads the records through
  bench/record/).
Nothing in bench/ outside this package imports it but the command line (bench/cli/).
"""

from bench.gridrun.runner import add_arguments, main

__all__ = ["add_arguments", "main"]
