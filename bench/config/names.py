"""The one rule for names: method files, variants, sweeps and sweep points, archs (checked here only).

A name is a run folder (results/runs/<dataset>/<arch>/<method>/...), a Snakemake wildcard, a table row
and a figure label, so it must mean one thing on every file system and in every shell: lowercase
letters, digits and `_`, in parts joined by single hyphens (`ssa-no_align`, `ssa_design-lr_0p003`),
starting with a letter or digit, at most MAX_LENGTH characters, and no reserved word (`all` is a grid's
every-method keyword). Dataset names are image folders' names on disk and keep their own rule
(config/schema.yaml `dataset_name`).
"""

from __future__ import annotations

import re

ALL_METHODS = "all"  # a grid's `methods: all` = every config variant plus every method file
RESERVED = (ALL_METHODS,)
MAX_LENGTH = 64
PATTERN = r"[a-z0-9][a-z0-9_]*(-[a-z0-9_]+)*"
RULE = (
    f"lowercase letters, digits and _ in parts joined by single hyphens (e.g. ssa-no_align), "
    f"starting with a letter or digit, at most {MAX_LENGTH} characters, not {', '.join(RESERVED)}"
)
_FULL = re.compile(f"(?=.{{1,{MAX_LENGTH}}}$){PATTERN}")


def problem(name: object) -> str | None:
    """Why `name` is no valid name (None: it is one)."""
    if not isinstance(name, str) or not _FULL.fullmatch(name):
        return f"bad name {name!r}; accepted: {RULE}"
    if name in RESERVED:
        return f"bad name {name!r}: a reserved word; accepted: {RULE}"
    return None


def check(name: object, where: str) -> str:
    """`name` if valid, else a ValueError starting with `where` (the config key or file that holds it)."""
    reason = problem(name)
    if reason:
        raise ValueError(f"{where}: {reason}")
    return name


def json_schema() -> dict:
    """The rule as config/schema.yaml's `$defs.name` (bench/config/schema.py fills it in), reserved words aside."""
    return {"type": "string", "pattern": f"^{_FULL.pattern}$", "description": RULE}
