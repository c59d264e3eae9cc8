"""A record checked as a whole (bench/record/check.py checks each value alone): the fields must agree with
each other as bench/run/outputs.py writes them, and the recipe and options with what the trainer declares,
so a hand-edited or foreign record whose values are each plausible never reaches a table.

What holds for every record the trainer writes (and every committed one):
- the history's epochs are numbered 1 to n in order; `epochs` is n; `epochs_planned` is the recipe's
  `epochs` and at least n; a run that ends `ok` trained all of them, one that `diverged` stopped at its
  first epoch with a non-finite (null) training loss or test accuracy (the network's outputs), so only
  its last epoch's may be null;
- `test_acc` and `test_top5` are the last epoch's (top-5 null with 5 classes or fewer), `best_test_acc`
  the history's best; a run that trained no epoch has none of them;
- `selection` `last` reports the last epoch, `best_val` (the recipe's `val_split` above 0, or epochs with
  a validation accuracy) the first epoch of the best validation accuracy, with that epoch's test and
  validation accuracies; a record from before the selection existed has none of these; a diverged
  epoch's accuracies are null (undefined), never the best;
- `config_hash` (null before it existed) is the hash of the spec the record names (bench/config/spec.py
  RunSpec: dataset, arch, method, impl, seed, recipe, options), so an edit of any of them shows even where
  the new value alone is accepted (a field added to RunSpec changes every hash: keep older records'
  readable, tests/test_record.py reads every committed one);
- `per_class_acc` has one entry per class (`num_classes`), each epoch's per-block `alignment` and
  declared per-block measures one per block;
- every recipe key is one of the recipe's (bench/config/recipe.py RECIPE) with a value its Option accepts (a key
  the record predates is absent, not refused), and every option one the rule declares, likewise. A rule
  whose file no longer exists (or cannot be loaded) still has readable records: their results stay
  results, and its options are then checked only as option values (a string, a boolean, a finite number
  or a list of finite numbers).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

from bench.config.recipe import RECIPE
from bench.config.recipe import check_recipe as check_across
from bench.config.spec import RunSpec
from bench.method import get_method

Refuse = Callable[..., ValueError]  # (key, value, accepted) -> the error naming the file


def check_consistency(record: dict, path: Path | str, refuse: Refuse) -> None:
    """Refuse a record whose fields contradict each other or the declared recipe and options, naming
    `path` and the key."""
    check_recipe(record.get("recipe", {}), path, refuse)
    check_options(record, refuse)
    history = record["history"]
    check_epochs(record, history, refuse)
    check_outcome(record, history, refuse)
    check_selection(record, history, refuse)
    check_shapes(record, history, refuse)
    check_hash(record, refuse)


def check_epochs(record: dict, history: list, refuse: Refuse) -> None:
    """Epoch numbers, `epochs`, `epochs_planned` and the status against the history."""
    n = len(history)
    for i, entry in enumerate(history):
        if entry["epoch"] != i + 1:
            raise refuse(
                f"history[{i}].epoch",
                entry["epoch"],
                f"{i + 1} (a history is epochs 1 to n in order)",
            )
    if record.get("epochs") is not None and record["epochs"] != n:
        raise refuse("epochs", record["epochs"], f"{n}, the epochs its history holds")
    planned = record.get("epochs_planned")
    recipe_epochs = record.get("recipe", {}).get("epochs")
    if planned is not None and recipe_epochs is not None and planned != recipe_epochs:
        raise refuse("epochs_planned", planned, f"{recipe_epochs!r}, the recipe's epochs")
    if planned is not None and n > planned:
        raise refuse("epochs_planned", planned, f"at least {n}, the epochs its history holds")
    if record["status"] == "ok" and planned is not None and n != planned:
        raise refuse("status", "ok", f"diverged for a run that trained {n} of {planned} epochs")
    # An epoch diverged when its loss or its network's outputs were not finite (bench/run/train.py): its
    # train_loss or test_acc is null, and it is the run's last.
    diverged = [
        entry.get("train_loss") is None or entry.get("test_acc") is None for entry in history
    ]
    if record["status"] == "diverged" and (not history or not diverged[-1]):
        raise refuse(
            "status",
            "diverged",
            "ok (a diverged run ends at its first epoch with a null loss or test accuracy)",
        )
    last_allowed = n - 1 if record["status"] == "diverged" else n
    for i, entry in enumerate(history[:last_allowed]):
        for key in ("train_loss", "test_acc"):
            if entry.get(key) is None:
                raise refuse(
                    f"history[{i}].{key}",
                    None,
                    "a finite number (a null loss or test accuracy ends the run as diverged, "
                    "in its last epoch)",
                )


def check_outcome(record: dict, history: list, refuse: Refuse) -> None:
    """`test_acc`, `test_top5` and `best_test_acc` against the history."""
    last = history[-1] if history else {}
    expected = last.get("test_acc")
    if record["test_acc"] != expected:
        raise refuse(
            "test_acc", record["test_acc"], f"{expected!r}, the last epoch's test accuracy"
        )
    classes = record.get("num_classes")
    if classes is not None and "test_top5" in record:
        expected = last.get("test_top5") if classes > 5 else None
        if record["test_top5"] != expected:
            raise refuse(
                "test_top5",
                record["test_top5"],
                f"{expected!r}, the last epoch's (null with {classes} classes)"
                if classes <= 5
                else f"{expected!r}, the last epoch's",
            )
    if "best_test_acc" in record:
        # a diverged epoch's accuracy is null (undefined): the best is that of the others
        expected = max(
            (e["test_acc"] for e in history if e.get("test_acc") is not None), default=None
        )
        if record["best_test_acc"] != expected:
            raise refuse(
                "best_test_acc", record["best_test_acc"], f"{expected!r}, the history's best"
            )


def check_selection(record: dict, history: list, refuse: Refuse) -> None:
    """The reported epoch: bench/run/outputs.py selected_epoch, recomputed from the history."""
    selection = record.get("selection")
    if selection is None:  # a record from before the selection existed: nothing selected
        for key in ("selected_epoch", "selected_test_acc", "best_val_acc"):
            if record.get(key) is not None:
                raise refuse(key, record[key], "null in a record without a 'selection'")
        return
    # A validation accuracy is null where the network was not finite (a diverged epoch): the recipe's
    # val_split, or any epoch's number, says whether the run had a validation split.
    val_split = record.get("recipe", {}).get("val_split")
    validated = any(entry.get("val_acc") is not None for entry in history)
    if selection == "last" and validated:
        raise refuse("selection", selection, "best_val (its epochs have a validation accuracy)")
    if selection == "best_val" and not (validated or (history and val_split)):
        raise refuse("selection", selection, "last (its epochs have no validation accuracy)")
    if val_split is not None and bool(history and val_split) != (selection == "best_val"):
        accepted = "0: its epochs have no validation accuracy (selection last)"
        if not val_split:
            accepted = "> 0: its epochs have a validation accuracy (selection best_val)"
        raise refuse("recipe.val_split", val_split, accepted)
    chosen = {}
    if selection == "best_val":
        # bench/run/outputs.py selected_epoch: the first epoch of the best, an undefined one last
        chosen = max(history, key=lambda h: (_or_low(h.get("val_acc")), -h["epoch"]))
    elif history:
        chosen = history[-1]
    wanted = {
        "selected_epoch": chosen.get("epoch"),
        "selected_test_acc": chosen.get("test_acc"),
        "best_val_acc": chosen.get("val_acc"),
    }
    for key, value in wanted.items():
        if record.get(key) != value:
            where = "the best-validation epoch's" if selection == "best_val" else "the last epoch's"
            if key == "selected_epoch" and value is not None:
                where = f"of {len(history)} epochs, {where}"
            raise refuse(key, record.get(key), f"{value!r}, {where} (selection {selection})")


def _or_low(value):
    return -math.inf if value is None else value


def check_shapes(record: dict, history: list, refuse: Refuse) -> None:
    """Per-class accuracies one per class; per-block alignments and declared per-block measures one per
    block."""
    classes, per_class = record.get("num_classes"), record.get("per_class_acc")
    if classes is not None and per_class is not None and len(per_class) != classes:
        raise refuse("num_classes", classes, f"{len(per_class)}, the classes of per_class_acc")
    blocks = record.get("blocks")
    for i, entry in enumerate(history):
        alignment = entry.get("alignment")
        if blocks is not None and alignment is not None and len(alignment) != blocks:
            raise refuse(
                f"history[{i}].alignment", alignment, f"one cosine per block ({blocks} blocks)"
            )
    if blocks is None:
        return
    per_block = [(f"history[{i}].measures", e.get("measures")) for i, e in enumerate(history)]
    for key, values in [*per_block, ("measures", record.get("measures"))]:
        for name, value in (values or {}).items():
            if isinstance(value, list) and len(value) != blocks:
                raise refuse(f"{key}.{name}", value, f"one value per block ({blocks} blocks)")


def check_recipe(recipe: dict, path: Path | str, refuse: Refuse) -> None:
    """Every recipe key a declared one, with a value its Option accepts, and the keys together."""
    for key, value in recipe.items():
        if key not in RECIPE:
            raise refuse(f"recipe.{key}", value, f"a recipe key: {', '.join(RECIPE)}")
        check_option(RECIPE[key], f"recipe.{key}", value, refuse)
    try:
        check_across({k: option.default for k, option in RECIPE.items()} | recipe)
    except ValueError as error:
        raise ValueError(f"{path}: recipe: {error}") from None


def check_options(record: dict, refuse: Refuse) -> None:
    """Every option one the rule declares, with a value its Option accepts; a rule that cannot be
    loaded (its file gone) has its options checked as option values only."""
    impl = record.get("impl") or record["method"]
    try:
        declared = get_method(impl).options
    except (ValueError, FileNotFoundError, SyntaxError, ImportError):
        declared = None
    for key, value in record.get("options", {}).items():
        if declared is None:
            if not plain_value(value):
                raise refuse(
                    f"options.{key}",
                    value,
                    "a string, true or false, a finite number or a list of finite numbers",
                )
        elif key not in declared:
            raise refuse(f"options.{key}", value, f"an option of {impl}: {', '.join(declared)}")
        else:
            check_option(declared[key], f"options.{key}", value, refuse)


def check_option(option, key: str, value, refuse: Refuse) -> None:
    """`value` as the trainer writes it: typed (no command-line text for a number) and accepted."""
    typed = not isinstance(value, str) or isinstance(option.default, str)
    try:
        if typed and option.parse(key, value) == value:
            return
    except ValueError:
        pass
    raise refuse(key, value, option.accepted())


def plain_value(value) -> bool:
    def finite(v):
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    if isinstance(value, list):
        return all(finite(v) for v in value)
    return isinstance(value, (str, bool)) or finite(value)


def check_hash(record: dict, refuse: Refuse) -> None:
    """`config_hash` against the spec the record names (the hash a checkpoint resumes by)."""
    written = record.get("config_hash")
    if written is None:  # a record from before the hash
        return
    named = [record.get(key) for key in ("dataset", "arch", "method", "impl", "seed")]
    expected = RunSpec(*named, record.get("recipe", {}), record.get("options", {})).config_hash()
    if written != expected:
        raise refuse(
            "config_hash",
            written,
            f"{expected!r}, the hash of its dataset, arch, method, impl, seed, recipe and options",
        )
