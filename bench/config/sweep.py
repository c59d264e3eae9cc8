"""Sweeps: a design over named method options (and recipe keys), expanded into method variants.

A sweep is config, not code. In a config file:

    sweeps:
      ssa_rank:                       # the sweep's name: its variants are ssa_rank-<what differs>
        impl: ssa                     # the method file every point runs
        base: {lambda_align: 0.1}     # options (or recipe keys) shared by every point
        design: one_at_a_time         # or `grid`: every combination of the values below
        options:
          rank_ratio: [1.0, 0.5, 0.25]
          lr: [0.0005, 0.002]         # a recipe key: the point's variant holds it beside its options

`one_at_a_time` (a fractional design) runs the base point once, then varies one option at a time with the
others at the base (the base's own value of an option is not run twice); `grid` runs the full factorial.
A dataset's grid lists a sweep by name in `methods:` (`methods: [bp, dfa, ssa_rank]`); it expands to the
sweep's variants there. A grid may also name single points (`methods: [bp, ssa_rank-lr_0p002]`, e.g. to
rerun the best points with more seeds); a point is one variant, its recipe keys in it, so every entry
point (Snakefile, `bench train`, `bench grid`, `bench list`, perf) runs the same recipe under its name.
`methods: all` does not include sweep points. Variant names spell out what differs
from the base, e.g. `ssa_rank-rank_ratio_0p25`, `ssa_rank-lr_0p002`, `ssa_rank-base`.
"""

from __future__ import annotations

import copy
import itertools
from typing import Any

from bench.config import names
from bench.config.recipe import RECIPE
from bench.method import broken_methods, discover, get_method

DESIGNS = ("one_at_a_time", "grid")


def value_name(value: Any) -> str:
    """A value as a variant-name fragment: 0.25 -> 0p25, -1 -> m1, [2, 4] -> 2_4, [] -> none, True -> true."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "_".join(value_name(v) for v in value) or "none"
    if isinstance(
        value, float
    ):  # repr: the shortest text that reads back as the same float, so faithful
        return repr(value).replace("-", "m").replace(".", "p").replace("+", "")
    return str(value).replace("-", "m").replace(".", "p")


def points(name: str, sweep: dict) -> dict[str, dict[str, Any]]:
    """{variant name: its settings (base updated by the point's values)} of one sweep, in design order."""
    base, options = dict(sweep.get("base") or {}), dict(sweep.get("options") or {})
    design = sweep.get("design", "one_at_a_time")
    if design not in DESIGNS:
        raise ValueError(
            f"config key sweeps.{name}.design: {design!r}; accepted: {', '.join(DESIGNS)}"
        )
    candidates: list[tuple[str, dict[str, Any]]] = []
    if design == "grid":
        for values in itertools.product(*options.values()):
            changed = dict(zip(options, values))
            label = "-".join(f"{k}_{value_name(v)}" for k, v in changed.items())
            candidates.append((f"{name}-{label}" if label else f"{name}-base", base | changed))
    else:
        candidates.append((f"{name}-base", base))
        candidates += [
            (f"{name}-{key}_{value_name(value)}", base | {key: value})
            for key, values in options.items()
            for value in values
        ]
    result: dict[str, dict[str, Any]] = {}
    seen: dict[str, str] = {}
    defaults = _defaults(sweep.get("impl"))
    for variant, settings in candidates:
        key = repr(
            sorted((defaults | settings).items())
        )  # a value equal to the default is the same run
        if key in seen:
            continue
        if (
            variant in result
        ):  # two different points under one name: one record would say it ran the other
            raise ValueError(
                f"config key sweeps.{name}: points {result[variant]} and {settings} both get the "
                f"variant name {variant!r}; write their values so that they differ as text"
            )
        seen[key] = variant
        result[variant] = settings
    return result


def _defaults(impl: str | None) -> dict[str, Any]:
    """Default recipe values and options of method file `impl` ({} if unknown: bench.config.grid reports it)."""
    recipe = {k: option.default for k, option in RECIPE.items()}
    try:
        return recipe | {k: option.default for k, option in get_method(impl).options.items()}
    except ValueError:
        return recipe


def expand(config: dict) -> dict:
    """A copy of `config` with every sweep's points added as variants (the point's method options and
    recipe keys both, as any variant may hold: bench/config/spec.py resolve_variant) and each dataset's sweep
    names replaced by the sweep's variant names.

    Raises ValueError naming the config key for an unknown design, a sweep or point name that breaks
    bench/config/names.py's rule or names something else already (a variant, a method file), or a sweep of an
    unknown method file; a point that no longer fits the method's options is checked later by bench.config.grid
    like any variant.
    """
    sweeps = config.get("sweeps") or {}
    if not sweeps:
        return config
    files = {
        **discover(),
        **broken_methods(),
    }  # a broken file's sweep is refused where it is planned
    for name, sweep in sweeps.items():  # named here: its points' variant names would hide the sweep
        names.check(name, f"config key sweeps.{name}")
        if name in files:
            raise ValueError(
                f"config key sweeps.{name}: a method file of that name exists, which the sweep would "
                "hide in every grid; give the sweep another name"
            )
        if sweep.get("impl") not in files:
            raise ValueError(
                f"config key sweeps.{name}.impl: unknown method {sweep.get('impl')!r}; "
                f"known: {', '.join(sorted(files))}"
            )
    config = copy.deepcopy(config)
    variants = config.setdefault("variants", {})
    expanded: dict[str, list[str]] = {}
    for name, sweep in sweeps.items():
        if name in variants:
            raise ValueError(
                f"config key sweeps.{name}: a variant of that name exists; give the sweep another name"
            )
        expanded[name] = []
        for variant, settings in points(name, sweep).items():
            names.check(variant, f"config key sweeps.{name}: its point")
            if variant in variants:
                raise ValueError(
                    f"config key sweeps.{name}: its point {variant!r} is already a variant"
                )
            variants[variant] = {"impl": sweep["impl"], **settings}
            expanded[name].append(variant)
    for entry in (config.get("datasets") or {}).values():
        methods = entry.get("methods")
        if isinstance(methods, list):
            entry["methods"] = [v for m in methods for v in (expanded[m] if m in sweeps else [m])]
    return config
