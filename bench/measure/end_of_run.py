"""What the trainer measures once, on the trained network, after the last epoch (issue 21): calibration and
per-class accuracy (bench/measure/calibration.py) and adversarial robustness (bench/measure/robustness.py), with the time
it took; and the check, before anything trains, that the packages those need are installed.

A measure that cannot be computed (undefined: a diverged network's non-finite outputs, a one-class
dataset's calibration error; or failing) is null in the record with its reason in `unmeasured`, and a
warning: the training it follows is a result, and the rerun of a finished run must not fail on it.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable

import torch

from bench.measure import declare
from bench.measure.calibration import calibration_error, logits_and_labels, per_class_accuracy
from bench.measure.network import Undefined
from bench.measure.robustness import robustness

log = logging.getLogger("bench.measure.end_of_run")

# (recipe key that asks for it, package, what needs it): a run that cannot measure fails before it trains.
NEEDS = (
    ("attack_subset", "torchattacks", "the robustness attacks"),
    ("tensorboard", "tensorboard", "TensorBoard logging"),
)


def importable(package: str) -> bool:
    """Whether `package` imports (installed, and its own imports there: torchattacks needs scipy)."""
    try:
        importlib.import_module(package)
    except Exception:  # an ImportError, or whatever a broken install raises on import
        return False
    return True


def require_packages(recipe: dict) -> None:
    """ValueError naming the recipe key and the package when a requested measure's package is missing."""
    if not importable("torchmetrics"):
        raise ValueError(
            "the end-of-run calibration error needs the torchmetrics package: pip install torchmetrics"
        )
    for key, package, purpose in NEEDS:
        if recipe.get(key) and not importable(package):
            raise ValueError(
                f"{key}: {recipe[key]!r} asks for {purpose}, which need the {package} package: "
                f"pip install {package}, or set {key} to {0 if key == 'attack_subset' else 'false'}"
            )


def end_of_run(model, data, recipe: dict, speed) -> dict:
    """The record's `ece`, `per_class_acc`, `robustness` (null when attack_subset is 0), `measures` (the
    declared end-of-run measures, bench/measure/declare.py; null when none is declared), `unmeasured`
    ({measure: reason} for each that is null because it could not be computed; null when none) and
    `eval_time_s` (the seconds all of it took; robustness.time_s is the attacks' share)."""
    start = time.perf_counter()
    unmeasured: dict[str, str] = {}
    batch = recipe["eval_batch_size"]
    test = _attempt(
        ("ece", "per_class_acc"), unmeasured, lambda: logits_and_labels(model, data, batch, speed)
    )
    measured = {"ece": None, "per_class_acc": None}
    if test is not None:
        measured["ece"] = _attempt(("ece",), unmeasured, lambda: calibration_error(*test))
        classes = getattr(data, "classes", None)
        measured["per_class_acc"] = _attempt(
            ("per_class_acc",), unmeasured, lambda: per_class_accuracy(*test, classes)
        )
    measured["robustness"] = _attempt(
        ("robustness",), unmeasured, lambda: robustness(model, data, recipe, speed)
    )
    declared = declare.of("end")  # on the run's probe batch, as the per-epoch ones
    x, y = data.probe_batch(recipe["probe_size"]) if declared else (None, None)
    values = {
        name: _attempt((name,), unmeasured, lambda m=measure: declare.value(m, model, x, y))
        for name, measure in declared.items()
    }
    measured["measures"] = values or None
    device = next(model.parameters()).device
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    measured["eval_time_s"] = time.perf_counter() - start
    measured["unmeasured"] = unmeasured or None
    return measured


def _attempt(names: tuple[str, ...], unmeasured: dict, compute: Callable):
    """compute(), or None with the reason noted under each of `names` in `unmeasured` and logged: the
    measure's Undefined message, or the error it raised. A stop request (Ctrl-C, SIGTERM: BaseExceptions) still stops."""
    try:
        return compute()
    except Undefined as error:
        reason = str(error)
        log.warning("end-of-run %s not measured: %s", " and ".join(names), reason)
    except (
        Exception
    ) as error:  # a trained run is a result: the measure's failure is recorded, not raised
        reason = f"failed: {type(error).__name__}: {error}"
        log.warning("end-of-run %s not measured: %s", " and ".join(names), reason, exc_info=True)
    for name in names:
        unmeasured[name] = reason
    return None
