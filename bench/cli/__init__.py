"""The command line: `python -m bench <command>` (bad input exits with code 2 and says what is accepted).

Layers, each importing only those above it in this list:
- parser.py: one function per command that adds its options to the command's parser, and the `perf`
  kinds {kind: (help, module)}; the grid runner (bench/gridrun/) and bench/data/beton/write.py bring their own.
- commands.py: one function per command that runs it on the parsed arguments and returns the exit code;
  bad input is a ValueError or FileNotFoundError.
- this file: COMMANDS, the one table {name: (help, add_arguments, run)} that both builds the parser and
  dispatches, and `main`, which catches bad input once (one line on stderr, exit code 2), a failed file
  operation (exit 2), and Ctrl-C or SIGTERM (exit 130 or 143).
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading

from bench import gridrun
from bench.cli import commands
from bench.cli import parser as arguments
from bench.data.beton import write as beton
from bench.run import stop

DESCRIPTION = "The command line: `python -m bench train|list` (bad input exits with code 2 and says what is accepted)."

COMMANDS = {  # in the order `python -m bench --help` lists them
    "train": (
        "train one (dataset, arch, method variant, seed) run",
        arguments.train,
        commands.cmd_train,
    ),
    "list": (
        "print the datasets, archs, methods and variants this suite knows",
        arguments.listing,
        commands.cmd_list,
    ),
    "perf": ("throughput benchmarks", arguments.perf, commands.cmd_perf),
    "beton": (
        "write one split of an image folder to an FFCV .beton",
        beton.add_arguments,
        beton.main,
    ),
    "grid": (
        "one dataset's runs without Snakemake, --jobs at a time, "
        "cut at a deadline (the prepared GPU run's grid)",
        gridrun.add_arguments,
        gridrun.main,
    ),
    "aggregate": (
        "records of one dataset -> OUT_DIR/<dataset>_table.csv and .md",
        arguments.aggregate,
        commands.cmd_aggregate,
    ),
    "claims": (
        "records of the paper datasets -> claims.md: evidence and a "
        "verdict for each claim of the paper",
        arguments.claims,
        commands.cmd_claims,
    ),
    "sweep-report": (
        "a sweep's records -> its table, a sensitivity figure per option, and findings.md",
        arguments.sweep_report,
        commands.cmd_sweep_report,
    ),
    "plot": (
        "records of one dataset -> OUT_DIR/<dataset>_<figure>.png and .pdf",
        arguments.plot,
        commands.cmd_plot,
    ),
}


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=DESCRIPTION)
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name, (line, add_arguments, _) in COMMANDS.items():
        add_arguments(subparsers.add_parser(name, help=line))
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S", stream=sys.stderr
    )
    args = parser().parse_args(argv)
    previous = stop.install() if threading.current_thread() is threading.main_thread() else None
    try:
        code = COMMANDS[args.command][2](args)
        stop.check()  # a stop dropped inside a finaliser is no success
        return code
    except (
        ValueError,
        FileNotFoundError,
    ) as error:  # bad input: what was wrong and what is accepted
        print(f"error: {error}", file=sys.stderr)
        return 2
    # a full disk, a path that is a folder, no permission: say which file, no traceback
    except OSError as error:
        where = f" ({error.filename})" if error.filename else ""
        print(f"error: {error.strerror or error}{where}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, stop.Terminated) as stopped:
        # Files are written through temp file + rename and the run-folder lock is released on the way out,
        # so what is on disk is the last complete checkpoint and record: the same command resumes.
        code, name = (
            (130, "interrupted (Ctrl-C)")
            if isinstance(stopped, KeyboardInterrupt)
            else (143, "terminated (SIGTERM)")
        )
        print(
            f"{name}: stopped; files on disk are complete; rerun the same command to resume",
            file=sys.stderr,
        )
        return code
    finally:
        if previous is not None:
            stop.restore(previous)
