"""The one rule for names: method files, variants, sweeps and sweep points, archs (checked here only).

A name is a run folder (results/runs/<dataset>/<arch>/<method>/...), a Snakemake wildcard, a table row
and a figure label, so it must mean one thing on every file system and in every shell: lowercase
letters, digits and `_`, in parts joined by single hyphens (`ssa-no_align`, `ssa_design-lr_0p003`),
starting with a letter or digit, at most MAX_LENGTH characters, and no reserved word (`all` is a grid's
every-method keyword). Dataset names are image folders' names on disk and keep their own rule
(config/schema.yaml `dataset_name`).

One alias, for archs only: a torchvision classification model is the arch `tv-<model>` (a name under the rule:
`tv-resnet18`, `tv-mobilenet_v2`), which the command line and the configs also take spelled
`torchvision:<model>`; `arch_name` turns that spelling into the name at the edge, before a folder, a record
or a wildcard sees it. What the names mean is bench/models' (bench/models/zoo.py builds them).
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
TORCHVISION_PREFIX = "tv-"  # the arch name of torchvision model M is tv-M
TORCHVISION_ALIAS = "torchvision:"  # and torchvision:M is how a user may also spell it


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


def arch_name(spelled: object) -> object:
    """An arch as the user spelled it, in its one form: `torchvision:<model>` -> `tv-<model>`; anything
    else unchanged (and checked where it is used)."""
    if isinstance(spelled, str) and spelled.startswith(TORCHVISION_ALIAS):
        return TORCHVISION_PREFIX + spelled[len(TORCHVISION_ALIAS) :]
    return spelled


def arch_json_schema() -> dict:
    """An arch as a config may spell it (config/schema.yaml `$defs.arch`): a name, or `torchvision:<model>`."""
    alias = f"{re.escape(TORCHVISION_ALIAS)}[a-z0-9_]+"
    return {
        "type": "string",
        "pattern": f"^(?:{_FULL.pattern}|{alias})$",
        "description": f"{RULE}; or {TORCHVISION_ALIAS}<model> for the arch {TORCHVISION_PREFIX}<model>",
    }


def json_schema() -> dict:
    """The rule as config/schema.yaml's `$defs.name` (bench/config/schema.py fills it in), reserved words aside."""
    return {"type": "string", "pattern": f"^{_FULL.pattern}$", "description": RULE}
