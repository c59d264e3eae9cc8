"""What the trainer measures once, on the trained network, after the last epoch (issue 21): calibration and
per-class accuracy (bench/calibration.py) and adversarial robustness (bench/robustness.py), with the time
it took; and the check, before anything trains, that the packages those need are installed."""

from __future__ import annotations

import importlib

from bench.calibration import final_evaluation
from bench.robustness import robustness

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
    """The record's `ece`, `per_class_acc`, `robustness` (null when attack_subset is 0) and `eval_time_s`
    (the seconds all of it took; robustness.time_s is the attacks' share)."""
    measured = final_evaluation(model, data, recipe["eval_batch_size"], speed)
    measured["robustness"] = robustness(model, data, recipe, speed)
    if measured["robustness"] is not None:
        measured["eval_time_s"] += measured["robustness"]["time_s"]
    return measured
