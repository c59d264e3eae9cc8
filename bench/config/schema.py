"""The config's JSON schema (config/schema.yaml) and the one check of a config against it.

The recipe block of the schema is not written in the file: it is generated from bench/config/recipe.py RECIPE
(`recipe_schema`), so that each recipe key's type, bounds, choices and help are declared once; so is the
rule for names (`$defs.name` and `$defs.arch`, from bench/config/names.py).
"""

from __future__ import annotations

import math
from typing import Any

import yaml

from bench.config import names
from bench.config.recipe import RECIPE
from bench.layout import REPO
from bench.option import Option

SCHEMA = REPO / "config" / "schema.yaml"


def recipe_schema() -> dict[str, dict]:
    """{recipe key: its JSON schema}: RECIPE's Options as the schema's `$defs.recipe.properties`."""
    return {key: _option_schema(option) for key, option in RECIPE.items()}


def _option_schema(option: Option) -> dict:
    default = option.default
    if option.choices:
        rule: dict[str, Any] = {"enum": list(option.choices)}
    elif isinstance(default, list):
        rule = {"type": "array", "items": {"type": "integer" if option.item is int else "number"}}
    else:
        kinds = ((bool, "boolean"), (int, "integer"), (float, "number"), (str, "string"))
        rule = {"type": next(name for kind, name in kinds if isinstance(default, kind))}
    bounds = {
        "minimum": option.minimum,
        "maximum": option.maximum,
        "exclusiveMinimum": option.above,
    }
    # a list's bounds apply to each item, as Option.parse applies them
    (rule["items"] if isinstance(default, list) else rule).update(
        {name: value for name, value in bounds.items() if value is not None}
    )
    return {**rule, "description": option.help}


def load_schema() -> dict:
    """config/schema.yaml with its recipe block filled in from RECIPE and its name rule from bench/config/names.py."""
    schema = yaml.safe_load(SCHEMA.read_text())
    schema["$defs"]["recipe"]["properties"] = recipe_schema()
    schema["$defs"]["name"] = names.json_schema()
    schema["$defs"]["arch"] = names.arch_json_schema()
    return schema


def validate(config: dict) -> dict:
    """Check `config` against the JSON schema (defaults filled in); ValueError names the key and the rule.

    NaN and infinities are refused everywhere first: JSON schema's `number` admits them (YAML's .inf).
    Where jsonschema is not installed (the lent GPU machine, which runs configs checked here first) only
    the top-level defaults are filled in; every variant, recipe value and method name is still checked by
    bench.config.grid.grids, which needs no jsonschema.
    """
    _refuse_non_finite(config, "")
    schema = load_schema()
    try:
        import jsonschema
    except ImportError:
        for key, sub in schema["properties"].items():
            if "default" in sub:
                config.setdefault(key, sub["default"])
        return config
    validator = _with_defaults(jsonschema.validators.validator_for(schema))(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(config))
    if error is not None:
        where = ".".join(map(str, error.absolute_path)) or "(top level)"
        message, accepted = error.message, ""
        if error.validator == "additionalProperties" and isinstance(
            error.schema.get("properties"), dict
        ):
            accepted = f"; accepted keys: {', '.join(error.schema['properties'])}"
        if error.validator == "pattern" and error.schema.get(
            "description"
        ):  # the rule in words, not a regex
            message, accepted = (
                f"bad value {error.instance!r}",
                f"; accepted: {error.schema['description']}",
            )
        raise ValueError(f"config key {where}: {message}{accepted}")
    return config


def _refuse_non_finite(value: Any, where: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(
            f"config key {where or '(top level)'}: bad value {value!r}; accepted: a finite number"
        )
    if isinstance(value, dict):
        for key, item in value.items():
            _refuse_non_finite(item, f"{where}.{key}" if where else str(key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _refuse_non_finite(item, f"{where}[{i}]")


def _with_defaults(validator_class):
    """A validator class that also fills in each property's `default` (as snakemake.utils.validate does)."""
    import jsonschema

    check_properties = validator_class.VALIDATORS["properties"]

    def properties(validator, props, instance, schema):
        if isinstance(instance, dict):
            for key, sub in props.items():
                if "default" in sub:
                    instance.setdefault(key, sub["default"])
        yield from check_properties(validator, props, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": properties})
