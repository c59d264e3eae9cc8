"""Every Snakemake command the docs show parses as meant: its target is not swallowed by an option.

`--config` and `--configfile` take several values, so in `snakemake --config data_dir=D sweep` the word
`sweep` is read as a config entry (and `--configfile F sweep` as a config file): such a command fails
or builds the default target instead. Documented commands put `--` before their targets.
"""

import re
import shlex
from pathlib import Path

import pytest
from snakemake.cli import get_argument_parser

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted(
    [
        ROOT / "README.md",
        *(ROOT / "docs").glob("*.md"),
        ROOT / "Snakefile",
        *(ROOT / "config").glob("*.yaml"),
        *(ROOT / "results").rglob("README.md"),
    ]
)


def documented_commands(path: Path):
    """(line number, argument string) of each `snakemake -...` command in `path`, continuations joined."""
    lines = path.read_text().splitlines()
    for number, line in enumerate(lines):
        match = re.search(r"(?:^|[\s`/])snakemake\s+(-.*)", line)
        if not match:
            continue
        text, following = match.group(1), iter(lines[number + 1 :])
        while True:  # join backslash continuations and quotes that span lines
            text = text.split("`")[0]  # inline code ends at a backtick
            text = re.split(r"\s{2,}(?=[a-z])|\s#\s", text)[0]  # a comment column after the command
            try:
                shlex.split(text.rstrip("\\"))
                if not text.rstrip().endswith("\\"):
                    break
            except ValueError:  # an open quote: the command goes on
                pass
            text = text.rstrip().rstrip("\\") + " " + next(following, "").lstrip("# ")
        yield number + 1, text


COMMANDS = [
    (f"{path.relative_to(ROOT)}:{line}", text)
    for path in DOCS
    for line, text in documented_commands(path)
]


def test_the_docs_show_the_commands_this_test_checks():
    assert len(COMMANDS) >= 10
    assert any("--configfile config/sweep_ssa.yaml" in text for _, text in COMMANDS)


@pytest.mark.parametrize("where, text", COMMANDS, ids=[where for where, _ in COMMANDS])
def test_documented_snakemake_command_keeps_its_targets(where, text):
    args = get_argument_parser().parse_args(shlex.split(text))
    swallowed = [entry for entry in args.config or [] if "=" not in entry]
    assert not swallowed, f"{where}: --config took the target(s) {swallowed}; put -- before them"
    for configfile in args.configfile or []:
        assert (ROOT / configfile).is_file(), (
            f"{where}: --configfile took {configfile}; put -- before targets"
        )
