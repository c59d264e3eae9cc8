"""End-of-run evaluation beyond accuracy (issue 21, first part): expected calibration error and per-class
test accuracy, once, on the trained network, in eval mode (float32). Each raises
bench.measure.network.Undefined, with the reason, where it has no value (bench/measure/end_of_run.py records it as null)."""

from __future__ import annotations

import torch

from bench.measure.network import Undefined

ECE_BINS = 15  # the usual choice (Guo et al. 2017); torchmetrics' default too


def test_outputs(model, data, batch_size: int, speed):
    """(logits, labels) of each test batch, in eval mode, restored after: the one pass over the test split
    that the trainer's per-epoch `evaluate` and the end-of-run measures both use (call under no_grad)."""
    was_training = model.training
    model.eval()
    try:
        for x, y in data.test_batches(batch_size):
            yield model(speed.batch(x)), y
    finally:
        model.train(was_training)


@torch.no_grad()
def logits_and_labels(model, data, batch_size: int, speed) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits (N, classes) in float32, labels (N,)) of the whole test split."""
    logits, labels = [], []
    for out, y in test_outputs(model, data, batch_size, speed):
        logits.append(out.float())
        labels.append(y)
    return torch.cat(logits), torch.cat(labels)


def check_outputs(logits: torch.Tensor, measure: str) -> None:
    """Undefined unless there are images and every image's logits (N, classes) are finite: a diverged
    network's NaN logits would give argmax 0 (class 0 always "right") and a calibration error of 0.1."""
    if len(logits) == 0:
        raise Undefined(f"no test images: {measure} is undefined")
    bad = int((~torch.isfinite(logits)).any(dim=1).sum())
    if bad:
        raise Undefined(
            f"{bad} of {len(logits)} test images give non-finite outputs (a diverged network): "
            f"{measure} is undefined"
        )


def calibration_error(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """ECE of logits (N, classes) against labels (N,): torchmetrics' multiclass calibration error
    (15 equal-width confidence bins, L1: the mean over images of |accuracy - confidence| per bin,
    weighted by the bin's share), in [0, 1]. Undefined for fewer than 2 classes and non-finite logits."""
    from torchmetrics.functional.classification import multiclass_calibration_error

    classes = logits.shape[1]
    if classes < 2:
        raise Undefined(
            f"the network has {classes} class: calibration error is undefined for fewer than 2 classes"
        )
    check_outputs(logits, "calibration error")
    probs = torch.softmax(logits, dim=1)
    return multiclass_calibration_error(
        probs, labels, num_classes=classes, n_bins=ECE_BINS, norm="l1"
    ).item()


def per_class_accuracy(logits: torch.Tensor, labels: torch.Tensor, names=None) -> dict:
    """{class name: % of its test images predicted right}, by the class names `names` (default 0, 1, ...);
    None for a class without test images (undefined, not 0). Undefined for non-finite logits."""
    check_outputs(logits, "per-class accuracy")
    classes = logits.shape[1]
    correct = logits.argmax(1) == labels
    totals = torch.bincount(labels, minlength=classes)
    hits = torch.bincount(labels[correct], minlength=classes)
    names = list(names or range(classes))
    return {
        str(name): (100.0 * hits[c].item() / totals[c].item() if totals[c] else None)
        for c, name in enumerate(names)
    }
