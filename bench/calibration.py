"""End-of-run evaluation beyond accuracy (issue 21, first part): expected calibration error and per-class
test accuracy, once, on the trained network, in eval mode (float32)."""

from __future__ import annotations

import time

import torch

ECE_BINS = 15  # the usual choice (Guo et al. 2017); torchmetrics' default too


def test_outputs(model, data, batch_size: int, speed):
    """(logits, labels) of each test batch, in eval mode, restored after: the one pass over the test split
    that the trainer's per-epoch `evaluate` and `final_evaluation` both use (call under no_grad)."""
    was_training = model.training
    model.eval()
    try:
        for x, y in data.test_batches(batch_size):
            yield model(speed.batch(x)), y
    finally:
        model.train(was_training)


@torch.no_grad()
def final_evaluation(model, data, batch_size: int, speed) -> dict:
    """{"ece", "per_class_acc" {class name: % correct}, "eval_time_s"} over the test split.

    ECE: torchmetrics' multiclass calibration error (15 equal-width confidence bins, L1: the mean over
    images of |accuracy - confidence| per bin, weighted by the bin's share), in [0, 1]. Per-class accuracy
    in %, a class without test images None.
    """
    from torchmetrics.functional.classification import multiclass_calibration_error

    start = time.perf_counter()
    probs, labels = [], []
    for logits, y in test_outputs(model, data, batch_size, speed):
        probs.append(torch.softmax(logits.float(), dim=1))
        labels.append(y)
    probs, labels = torch.cat(probs), torch.cat(labels)
    k = probs.shape[1]
    ece = multiclass_calibration_error(
        probs, labels, num_classes=k, n_bins=ECE_BINS, norm="l1"
    ).item()
    correct = probs.argmax(1) == labels
    totals = torch.bincount(labels, minlength=k)
    hits = torch.bincount(labels[correct], minlength=k)
    names = list(getattr(data, "classes", None) or range(k))
    per_class = {
        str(name): (100.0 * hits[c].item() / totals[c].item() if totals[c] else None)
        for c, name in enumerate(names)
    }
    if probs.is_cuda:
        torch.cuda.synchronize(probs.device)
    return {"ece": ece, "per_class_acc": per_class, "eval_time_s": time.perf_counter() - start}
