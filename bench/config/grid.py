"""The experiment grid: the pipeline config (config/config.yaml) checked and expanded into planned runs.

bench/config/files.py load_config builds the grids of the merged config files with `grids` (for the
Snakefile and every `python -m bench ... --config`), so the meaning of every config key lives in one place.
The Snakefile also asks here what a planned run reads: its rule's file (method_source) and its .beton
files (run_inputs).
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bench.config import names, sweep
from bench.config.names import (
    ALL_METHODS,  # `methods: all`: every variant but sweep points, every file
)
from bench.config.recipe import RECIPE, check_recipe
from bench.config.spec import make_spec, resolve_variant
from bench.layout import Layout
from bench.method import broken_methods, discover, get_method, methods_dir
from bench.models import check_arch
from bench.option import resolve_options


@dataclass(frozen=True)
class Grid:
    """One dataset's planned runs: archs x methods x seeds, trained with `recipe` (recipe-key overrides)."""

    dataset: str
    archs: tuple[str, ...]
    methods: tuple[str, ...]
    seeds: tuple[int, ...]
    recipe: dict[str, Any] = field(default_factory=dict)
    # Per-method recipe overrides beyond `recipe`, resolved by grids(): the dataset's method_recipe of
    # the method file (impl; `ssa` covers every ssa-* variant) < the variant's own recipe keys < the
    # dataset's method_recipe of the variant.
    method_recipe: dict[str, dict[str, Any]] = field(default_factory=dict)
    published_as: str | None = (
        None  # the dataset whose published figures its table shows (default: itself)
    )

    def recipe_for(self, method: str) -> dict[str, Any]:
        """The recipe overrides of `method`'s runs: the dataset's recipe, then the method's own."""
        return {**self.recipe, **self.method_recipe.get(method, {})}

    def runs(self) -> list[tuple[str, str, int]]:
        """Every planned (arch, method, seed), archs outermost."""
        return [(a, m, s) for a in self.archs for m in self.methods for s in self.seeds]

    def record_paths(self, results: str | Path) -> list[str]:
        """The planned record.json paths under the results folder `results`."""
        return [Layout(str(results)).record(self.dataset, *run) for run in self.runs()]

    def published_args(self) -> str:
        """`--published-as DATASET` for `python -m bench aggregate`, or nothing."""
        return f"--published-as {shlex.quote(self.published_as)}" if self.published_as else ""

    def set_args(self, method: str | None = None) -> str:
        """`method`'s recipe overrides as `--set key=value` arguments for `python -m bench train`."""
        recipe = self.recipe_for(method) if method else self.recipe
        return " ".join(
            f"--set {shlex.quote(f'{key}={_yaml_scalar(value)}')}" for key, value in recipe.items()
        )


def method_source(method: str, variants: dict[str, dict[str, Any]]) -> str:
    """The file of the learning rule that variant `method` runs (an input of its runs: edit it, they rerun)."""
    impl, _, _ = resolve_variant(method, variants)
    return str(get_method(impl).source)


def run_inputs(dataset: str, data_dir: str | Path, recipe: dict) -> list[str]:
    """The .beton files a training run of `dataset` reads (for the pipeline's train rule); [] when it reads none.

    `recipe` holds the run's recipe overrides; unset keys take bench.config.recipe.RECIPE's defaults.
    """
    from bench.data.beton.write import (
        FFCV_DATASETS,
        beton_path,
    )  # bench.data: only where a run reads data
    from bench.data.options import DataOptions

    if dataset not in FFCV_DATASETS:
        return []
    full = {key: option.default for key, option in RECIPE.items()} | dict(recipe)
    spec = DataOptions.from_recipe(full).beton
    return [str(beton_path(data_dir, dataset, split, spec)) for split in ("train", "val")]


def variant_definition(method: str, variants: dict[str, dict[str, Any]]) -> str:
    """Variant `method` as its method file and options, one stable line: what its runs depend on in the
    config files, so that adding or editing another variant's file reruns nothing of this one. Its recipe
    keys are not in it: they reach the run as --set arguments (Grid.set_args), a param of their own."""
    impl, options, _ = resolve_variant(method, variants)
    return json.dumps({"impl": impl, **options}, sort_keys=True)


def _yaml_scalar(value: Any) -> str:
    """`value` as YAML text that parses back to the same value (1e-05 -> 1.0e-05, which YAML reads as a float)."""
    return yaml.safe_dump(value, default_flow_style=True).removesuffix("\n").removesuffix("\n...")


def known_methods(variants: dict[str, Any]) -> list[str]:
    """Names a grid may use: the config's variants, then method files in methods/ that no variant names
    (a broken one too: a grid that plans it is refused by refuse_broken, a run of it by make_spec)."""
    return list(variants) + sorted((set(discover()) | set(broken_methods())) - set(variants))


def refuse_broken(grids: dict[str, Grid], variants: dict[str, dict[str, Any]]) -> None:
    """Refuse a grid that plans a run of a broken method file (bench/method.py broken_methods), naming
    the file and its error; the Snakefile plans every grid, so it calls this (load_config(plan=True)),
    while a reader of one run needs only its own rule (make_spec refuses a broken one)."""
    broken = broken_methods()
    for dataset, planned in grids.items():
        for method in planned.methods:
            impl = (variants.get(method) or {}).get("impl", method)
            if impl in broken:
                raise ValueError(
                    f"config key datasets.{dataset}.methods: {method!r} runs a broken rule: {broken[impl]}; "
                    f"fix the file, move it out of the methods folder, or list the grid's methods "
                    f"without it (`{ALL_METHODS}` takes every method file)"
                )


def grids(config: dict, check_data: bool = True) -> dict[str, Grid]:
    """Every dataset's Grid from a schema-validated config, its variants and recipes checked.

    A dataset without `seeds` uses the top-level `seeds`; a top-level `epochs` replaces every dataset's
    recipe epochs; `methods: all` expands to known_methods() but the sweeps' points. Unknown method
    names, variant names against bench/config/names.py's rule or named like another method file, variant
    options and recipe values raise ValueError naming the config key, and with `check_data` so does a
    dataset that is neither registered nor an image folder under the config's data_dir.
    """
    variants = dict(config.get("variants") or {})
    for name in variants:
        _check_variant_name(name, variants[name])
        _check_spec(f"variants.{name}", name, {}, variants)
    known = known_methods(variants)
    sweeps = config.get("sweeps") or {}
    points = {point for name, entry in sweeps.items() for point in sweep.points(name, entry)}
    result = {}
    for dataset, entry in (config.get("datasets") or {}).items():
        if check_data:
            _check_dataset(dataset, config.get("data_dir"))
        archs = _check_archs(dataset, entry["archs"])
        methods = entry.get("methods", ALL_METHODS)
        methods = [m for m in known if m not in points] if methods == ALL_METHODS else list(methods)
        for method in methods:
            if method not in known:
                raise ValueError(
                    f"config key datasets.{dataset}.methods: unknown method {method!r}; "
                    f"known: {ALL_METHODS}, {', '.join(known)}"
                )
        recipe = dict(entry.get("recipe") or {})
        if config.get("epochs") is not None:
            recipe["epochs"] = config["epochs"]
        _check_spec(f"datasets.{dataset}.recipe", methods[0], recipe, variants)
        per_method = _method_recipes(
            dataset, entry.get("method_recipe") or {}, methods, recipe, variants, known
        )
        seeds = entry.get("seeds", config.get("seeds", [0]))
        result[dataset] = Grid(
            dataset,
            archs,
            tuple(methods),
            tuple(seeds),
            recipe,
            per_method,
            entry.get("published_as"),
        )
    return result


def _check_variant_name(name: str, entry: dict) -> None:
    """A variant's name follows bench/config/names.py's rule, and one named like a method file runs that file
    (`ssa: {impl: ssa, ...}` sets ssa's options in this config); `dfa: {impl: ssa}` would mean two things."""
    names.check(name, f"config key variants.{name}")
    impl = entry.get("impl", name)
    if impl != name and (name in discover() or name in broken_methods()):
        raise ValueError(
            f"config key variants.{name}: a variant named like the method file "
            f"{methods_dir() / name}.py must run that file (impl: {name}), not {impl!r}; "
            "give the variant another name"
        )


def _check_dataset(name: str, data_dir: str | None) -> None:
    """A registered dataset, or an image folder that exists under the config's data_dir."""
    from bench.data import check_name

    try:
        check_name(name, data_dir)
    except ValueError as error:
        raise ValueError(f"config key datasets.{name}: {error} (data_dir: {data_dir})") from None


def _check_archs(dataset: str, archs: list[str]) -> tuple[str, ...]:
    """Every arch of a grid in its one form (`torchvision:M` -> `tv-M`), each one bench.models builds, so a
    typo stops the pipeline before any job runs; an arch spelled twice is refused."""
    where = f"config key datasets.{dataset}.archs"
    named = [check_arch(arch, where) for arch in archs]
    twice = next((a for i, a in enumerate(named) if a in named[:i]), None)
    if twice is not None:
        raise ValueError(f"{where}: {twice!r} is listed twice; accepted: each arch once")
    return tuple(named)


def _method_recipes(
    dataset: str,
    overrides: dict,
    methods: list[str],
    recipe: dict,
    variants: dict,
    known: list[str],
) -> dict[str, dict]:
    """{method: its recipe overrides beyond the dataset's}, from `method_recipe` keyed by variant or impl."""
    impls = {name: (variants.get(name) or {}).get("impl", name) for name in methods}
    for name in overrides:
        if name not in known and name not in impls.values():
            raise ValueError(
                f"config key datasets.{dataset}.method_recipe: unknown method {name!r}; "
                f"known: {', '.join(known)}"
            )
    result = {}
    for method in methods:
        own = {
            **overrides.get(impls[method], {}),
            **_variant_recipe(method, variants),
            **overrides.get(method, {}),
        }
        # Every method's run spec, so a recipe key one rule refuses (locality: blockwise, grad_clip on
        # a rule that replaces the network's layers) stops the plan, not one of its jobs.
        key = f"method_recipe.{method}" if own else f"recipe (method {method})"
        _check_spec(f"datasets.{dataset}.{key}", method, {**recipe, **own}, variants)
        if own:
            result[method] = own
    return result


def _variant_recipe(method: str, variants: dict) -> dict:
    """The recipe keys variant `method` holds (bench/config/spec.py resolve_variant); {} for a method file."""
    return resolve_variant(method, variants)[2] if method in variants else {}


def _check_spec(key: str, method: str, recipe: dict, variants: dict) -> None:
    """Resolve one run spec as the trainer will (no data loaded); a ValueError names config `key`. A
    broken method file's options wait for the file to be fixed: its recipe is checked alone."""
    try:
        if (variants.get(method) or {}).get("impl", method) in broken_methods():
            given = {**_variant_recipe(method, variants), **recipe}
            check_recipe(resolve_options(RECIPE, given, owner="the recipe"))
        else:
            make_spec("-", "-", method, 0, recipe, variants)
    except ValueError as error:
        raise ValueError(f"config key {key}: {error}") from None
