"""One run's resolved spec: RunSpec, method variants resolved to (impl, options, recipe), and --set."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from bench.config.recipe import RECIPE, check_recipe
from bench.method import broken_methods, discover, get_method
from bench.option import resolve_options


@dataclass(frozen=True)
class RunSpec:
    """Everything that determines one run's numbers (timings aside)."""

    dataset: str
    arch: str
    method: str  # the variant name, e.g. ssa-no_align
    impl: str  # the method file it runs, e.g. ssa
    seed: int
    recipe: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)

    def config_hash(self) -> str:
        """Hash of the resolved spec: a checkpoint resumes only into a run with the same hash."""
        text = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def resolve_variant(
    name: str, variants: dict[str, dict[str, Any]]
) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(impl, options, recipe) of variant `name`: its method file, its method options and its recipe keys
    (a key of RECIPE is a recipe key); a bare method file name is its own variant. The one resolution of a
    variant: make_spec (every run), bench/config/grid.py (the Snakefile) and `bench list` use it."""
    if name in variants:
        entry = dict(variants[name])
        impl = entry.pop("impl", name)
        recipe = {key: entry.pop(key) for key in list(entry) if key in RECIPE}
        return impl, entry, recipe
    try:
        get_method(name)
    except ValueError:
        if name in broken_methods():
            raise
        known = sorted(set(variants) | set(discover()))
        raise ValueError(f"unknown method {name!r}; known: {', '.join(known)}") from None
    return name, {}, {}


def make_spec(
    dataset: str,
    arch: str,
    method: str,
    seed: int,
    overrides: dict[str, Any],
    variants: dict[str, dict[str, Any]],
) -> RunSpec:
    """Resolve a run, all checked: RECIPE defaults < the variant's recipe keys < `overrides` (the
    command line's --set, where the Snakefile puts the dataset's recipe and method_recipe, resolved by
    bench/config/grid.py), and the variant's options < `overrides`' method options."""
    impl, variant_options, variant_recipe = resolve_variant(method, variants)
    method_cls = get_method(impl)
    recipe_given = {**variant_recipe, **{k: v for k, v in overrides.items() if k in RECIPE}}
    method_given = {**variant_options, **{k: v for k, v in overrides.items() if k not in RECIPE}}
    unknown = sorted(set(method_given) - set(method_cls.options))
    if unknown:
        raise ValueError(
            f"unknown option {unknown[0]!r}; recipe keys: {', '.join(RECIPE)}; "
            f"options of {impl}: {', '.join(method_cls.options) or 'none'}"
        )
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"bad value {seed!r} for 'seed'; accepted: an integer >= 0")
    recipe = check_recipe(resolve_options(RECIPE, recipe_given, owner="the recipe"))
    options = resolve_options(method_cls.options, method_given, owner=f"method {impl!r}")
    # A rule that says it replaces the network's layers; bench/run/layer_options.py refuses undeclared ones.
    if not method_cls.keeps_layers:
        for key in ("grad_clip", "constrain_weights"):
            if recipe[key]:
                raise ValueError(
                    f"bad value {recipe[key]!r} for '{key}': method {impl!r} replaces the network's "
                    f"Conv2d and Linear layers by its own, which the option does not reach; accepted: "
                    f"{key} off with {impl}"
                )
    if recipe["locality"] == "blockwise":
        problem = method_cls(**options).blockwise_problem()
        if problem:
            able = ", ".join(name for name, cls in discover().items() if cls.blockwise)
            raise ValueError(
                f"bad value 'blockwise' for 'locality': {problem}; rules that declare it: {able}"
            )
    return RunSpec(dataset, arch, method, impl, seed, recipe, options)


def parse_sets(pairs: list[str]) -> dict[str, str]:
    """['key=value', ...] from --set into a dict; values stay strings until their Option parses them."""
    parsed = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"bad --set {pair!r}; expected key=value")
        parsed[key.strip()] = value.strip()
    return parsed
