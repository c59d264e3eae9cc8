"""The one config edge: every config file is read here, merged as Snakemake merges them, checked once,
its sweeps expanded once, and handed on as a typed Config.

Snakemake reads `configfile:` (config/config.yaml), then each --configfile on top; `python -m bench
train|list|grid|perf|aggregate|plot|sweep-report --config A --config B` reads config/config.yaml, then
A, then B, the same way, so a run sees the variants and sweeps the pipeline planned (the Snakefile
passes its train jobs the same files) and an overlay such as config/sweep_ssa.yaml is read as
`--configfile` reads it.
"""

from __future__ import annotations

import argparse
import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.config import grid, schema, sweep, yamlfile
from bench.layout import DEFAULT_CONFIG, Layout

DATASET_LISTS = ("default_datasets", "paper_datasets", "sweep_datasets")
# The trainer reads these from the files (the Snakefile passes it the files, not its merged config), so
# no command-line value may change them.
FILE_ONLY = ("variants", "sweeps")


@dataclass(frozen=True)
class Config:
    """The merged config files, checked: what the pipeline plans and where its files go."""

    files: tuple[str, ...]  # in merge order
    raw: dict[str, Any]  # the merged mapping, schema defaults filled in, sweeps not yet expanded
    variants: dict[str, dict[str, Any]]  # the files' variants plus every sweep point
    grids: dict[str, grid.Grid]  # dataset -> its planned runs
    layout: Layout  # every path under results_dir

    @property
    def sweeps(self) -> dict[str, dict]:
        return self.raw.get("sweeps") or {}


def load_config(
    paths: Sequence[Path | str] | None = None,
    overrides: Mapping | None = None,
    *,
    check_data: bool = True,
    plan: bool = False,
) -> Config:
    """config/config.yaml, then the config files `paths` merged in order (a file given twice counts at
    its first place, as in the Snakefile), then `overrides` (the Snakefile's `config`, which holds
    Snakemake's --config values), checked and expanded.

    Bad input raises ValueError naming the file or the config key and what is accepted (the CLI exits
    2), a missing file FileNotFoundError. `check_data`: every dataset of a grid must be registered or an
    image folder under data_dir; the trainer's readers skip it, as the data_dir that counts is theirs.
    `plan` (the Snakefile, which plans every grid): a grid that plans a run of a broken method file is
    refused naming the file (bench/config/grid.py refuse_broken); a reader of one run needs only its own rule.
    """
    unique: dict[Path, str] = {}
    for path in [DEFAULT_CONFIG, *(paths or [])]:
        unique.setdefault(Path(path).resolve(), str(path))
    files = tuple(unique.values())
    merged: dict = {}
    for path in files:
        merged = merge(merged, read(path))
    if overrides:
        overlaid = merge(merged, copy.deepcopy(dict(overrides)))
        for key in FILE_ONLY:
            if (overlaid.get(key) or {}) != (merged.get(key) or {}):
                raise ValueError(
                    f"config key {key}: the pipeline's {key} differ from those of its config files "
                    f"({', '.join(files)}); set {key} in a config file, not with --config"
                )
        merged = overlaid
    raw = schema.validate(coerce_numbers(merged))
    expanded = sweep.expand(raw)  # a copy when there are sweeps: raw keeps what the files say
    grids = grid.grids(expanded, check_data)
    for key in DATASET_LISTS:
        for name in raw.get(key) or []:
            if name not in grids:
                raise ValueError(
                    f"config key {key}: dataset {name!r} has no grid under datasets:; "
                    f"datasets with a grid: {', '.join(grids) or 'none'}"
                )
    variants = dict(expanded.get("variants") or {})
    if plan:
        grid.refuse_broken(grids, variants)
    return Config(files, raw, variants, grids, Layout(str(raw["results_dir"])))


def config_argument(parser: argparse.ArgumentParser, what: str) -> None:
    """--config, repeatable: the files load_config merges, as Snakemake does."""
    parser.add_argument(
        "--config",
        type=Path,
        action="append",
        help=f"config file {what}, merged on top of "
        f"{DEFAULT_CONFIG.relative_to(DEFAULT_CONFIG.parents[1])} as Snakemake merges a --configfile "
        "(repeat to merge several; later ones win)",
    )


def read(path: Path | str) -> dict:
    """One config file as a mapping, its `variants:` section's shape checked naming the file."""
    loaded = yamlfile.load(path) or {}
    if not isinstance(loaded, dict):
        raise ValueError(f"config file {path}: expected a mapping of config keys")
    variants = loaded.get("variants") or {}
    if not isinstance(variants, dict):
        raise ValueError(
            f"config key variants in {path}: expected a mapping of name -> {{impl, options}}"
        )
    for name, entry in variants.items():
        if not isinstance(entry, dict):
            raise ValueError(
                f"config key variants.{name} in {path}: expected a mapping like "
                f"{{impl: ssa, lambda_align: 0}}, got {entry!r}"
            )
    return loaded


def merge(base: dict, overlay: Mapping) -> dict:
    """Snakemake's merge of config files (update_config): nested mappings merge key by key, anything
    else (a list, a scalar) is replaced."""
    result = dict(base)
    for key, value in overlay.items():
        result[key] = (
            merge(result[key], value)
            if isinstance(value, Mapping) and isinstance(result.get(key), dict)
            else value
        )
    return result


def _number(value: Any) -> Any:
    """A number written as text on the command line (`--config seeds=[0]` gives ['0']) as that number."""
    if isinstance(value, list):
        return [_number(v) for v in value]
    if isinstance(value, str):
        for parse in (int, float):
            try:
                return parse(value)
            except ValueError:
                pass
    return value


def coerce_numbers(config: dict) -> dict:
    """Turn numeric text in seeds, epochs and recipe values into numbers, in place; returns `config`.

    Snakemake parses `--config key=[...]` with YAML's base loader, which keeps every scalar a string.
    It runs before the schema, so a value of the wrong shape is left as it is for the schema to name.
    """
    for key in ("seeds", "epochs"):
        if key in config:
            config[key] = _number(config[key])
    datasets = config.get("datasets")
    for entry in datasets.values() if isinstance(datasets, dict) else []:
        if isinstance(entry, dict):
            if "seeds" in entry:
                entry["seeds"] = _number(entry["seeds"])
            if isinstance(entry.get("recipe"), dict):
                entry["recipe"] = {k: _number(v) for k, v in entry["recipe"].items()}
            method_recipe = entry.get("method_recipe")
            for name, own in method_recipe.items() if isinstance(method_recipe, dict) else []:
                if isinstance(own, dict):
                    entry["method_recipe"][name] = {k: _number(v) for k, v in own.items()}
    return config
