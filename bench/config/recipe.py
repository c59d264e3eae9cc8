"""The training recipe: RECIPE, its keys declared once (the schema is generated from them), and the checks
across keys."""

from __future__ import annotations

from typing import Any

from bench.models import SCHEMES, SCOPES
from bench.option import Option

SWITCH = (
    "auto",
    "on",
    "off",
)  # speed options: auto = on when the run's device is CUDA (channels_last: always)

# The training recipe: owned by the trainer, shared by every method. [suite] defaults.
RECIPE: dict[str, Option] = {
    "epochs": Option(10, "training epochs", minimum=1),
    "batch_size": Option(128, "training batch size", minimum=1),
    "optimizer": Option(
        "adamw",
        "optimizer (rmsprop: BioTorch's, biotorch/benchmark/optimizers.py: torch's RMSprop "
        "with lr, momentum and weight_decay from the recipe, alpha 0.99 and eps 1e-8)",
        choices=("sgd", "adam", "adamw", "rmsprop"),
    ),
    "lr": Option(1e-3, "peak learning rate", above=0.0),
    "weight_decay": Option(
        1e-4, "weight decay (decoupled for adamw, L2 for sgd, adam and rmsprop)", minimum=0.0
    ),
    "momentum": Option(0.9, "sgd and rmsprop momentum", minimum=0.0, maximum=1.0),
    # BioTorch's layer options (biotorch/layers/fa_constructor/{linear,conv}.py), applied by the trainer to
    # every Conv2d and Linear of the network, head included, not to a rule's auxiliary nets; a rule that
    # replaces those layers (ssa, svd_bp) refuses them (bench/run/layer_options.py).
    "grad_clip": Option(
        0.0,
        "clamp each element of every Conv2d and Linear layer's gradients (weight, bias and the "
        "error it passes down) to [-grad_clip, grad_clip]; BioTorch's gradient_clip: true is 1 "
        "(0: off; one process only)",
        minimum=0.0,
    ),
    "constrain_weights": Option(
        False,
        "every forward sees each Conv2d and Linear weight rescaled to the Frobenius norm it had when "
        "the rule's preparation ended (BioTorch's constrain_weights, after Moskovitz et al. 2018)",
    ),
    "schedule": Option(
        "cosine", "lr schedule", choices=("cosine", "step", "multistep", "constant")
    ),
    "schedule_unit": Option(
        "epoch",
        "when the schedule advances: once per epoch, or every step (cosine then "
        "decays per batch to 0; step and multistep still change at epochs)",
        choices=("epoch", "step"),
    ),
    "step_size": Option(30, "step schedule: epochs between decays", minimum=1),
    "gamma": Option(0.1, "step and multistep schedules: decay factor", above=0.0, maximum=1.0),
    "milestones": Option(
        [],
        "multistep schedule: epochs after which the lr is multiplied by gamma "
        "(BioTorch: 100, 150, 200)",
        minimum=1,
    ),
    "val_split": Option(
        0,
        "training images held out for validation; the record then also selects the epoch "
        "of best validation accuracy (BioTorch: 5000 of CIFAR's 50,000; 0: none)",
        minimum=0,
    ),
    "keep_last_batch": Option(
        False,
        "also train on each epoch's last partial batch (kept when it holds at least "
        "2 images per process; default: dropped)",
    ),
    "locality": Option(
        "graph",
        "graph: the rule's own step (one backward call, the whole graph kept until it); "
        "blockwise: one block's graph at a time, for rules that declare it (bench/run/blockwise.py)",
        choices=("graph", "blockwise"),
    ),
    "eval_batch_size": Option(1000, "evaluation batch size", minimum=1),
    "probe_size": Option(
        256, "images in the fixed batch that measures alignment with BP", minimum=1
    ),
    # Robustness after training (bench/measure/robustness.py): FGSM and PGD through torchattacks, true gradients.
    "attack_subset": Option(
        1000, "test images attacked after training, a fixed seeded draw (0: no attack)", minimum=0
    ),
    "attack_eps": Option(
        [1.0, 2.0, 4.0, 8.0],
        "L-inf budgets of FGSM and PGD in 1/255 pixel units of the [0, 1] image",
        above=0.0,
        maximum=255.0,
        item=float,
    ),
    "attack_steps": Option(
        10, "PGD steps (step size 2.5 eps / steps, a seeded random start)", minimum=1
    ),
    "attack_rule_gradient": Option(
        False,
        "also attack through the rule's own backward (BioTorch's setting; "
        "rules with per-layer feedback weights), beside the true gradient",
    ),
    "tensorboard": Option(
        False,
        "also log each epoch's history to <run folder>/tensorboard/ (needs the "
        "tensorboard package; record.json and log.csv stay the source of truth)",
    ),
    "batchnorm": Option(
        False, "mlp3, smallconv, lenet: BatchNorm before each hidden ReLU (the other archs have it)"
    ),
    "batchnorm_fc": Option(
        True,
        "with batchnorm: in the fully connected hidden blocks too (false: conv blocks "
        "only; mlp3 then has none; vgg8b's FC block has it built in; the other archs "
        "have no such block)",
    ),
    "conv_bias": Option(
        True,
        "smallconv, lenet, vgg8b: a bias in each hidden conv (false: none, as the other "
        "archs' convs, which BatchNorm follows)",
    ),
    "weight_init": Option(
        "default",
        "conv and linear weights (of the layers weight_init_scope names): the arch's own "
        "init, or re-drawn (kaiming: fan_in, ReLU gain; biases zero; BioTorch's init: xavier "
        "is xavier_uniform with scope all)",
        choices=tuple(SCHEMES),
    ),
    "weight_init_scope": Option(
        "hidden",
        "which layers weight_init re-draws: the hidden blocks (the head keeps its own "
        "init), or all (the head too: every layer a rule trains)",
        choices=tuple(SCOPES),
    ),
    "device": Option(
        "auto", "training device; auto picks cuda when present", choices=("auto", "cpu", "cuda")
    ),
    # Data: augmentation of on-device datasets (CIFAR, small image folders) and image-folder/FFCV settings.
    "image_size": Option(
        0,
        "image folders, imagenet, mnist, fashion_mnist: square side served (0: as stored; imagenet "
        "224; BioTorch's MNIST runs: 32); refused by the other datasets",
        minimum=0,
    ),
    "norm_mean": Option(
        [],
        "per-channel normalisation mean in [0, 1] units, e.g. [0.4914, 0.4822, 0.4465] "
        "(set with norm_std; empty: the training split's)",
        minimum=0.0,
        maximum=1.0,
        item=float,
    ),
    "norm_std": Option(
        [],
        "per-channel normalisation std in [0, 1] units (set with norm_mean; empty: the "
        "training split's)",
        above=0.0,
        item=float,
    ),
    "crop_pad": Option(
        4, "on-device datasets: random-crop padding in pixels (0: no crop)", minimum=0
    ),
    "flip": Option(True, "on-device datasets: random horizontal flip"),
    "cutout": Option(0, "on-device datasets: cutout square side (0: off)", minimum=0),
    "data_workers": Option(2, "decode processes, DataLoader workers, FFCV threads", minimum=0),
    "beton_max_res": Option(500, "imagenet .beton: longest side written", minimum=1),
    "beton_jpeg_proportion": Option(
        0.5, "imagenet .beton: share of images stored as JPEG", minimum=0.0, maximum=1.0
    ),
    "beton_quality": Option(90, "imagenet .beton: JPEG quality", minimum=1, maximum=100),
    # Speed: each switchable; none changes what is computed beyond float rounding (bf16 autocast: more).
    "channels_last": Option(
        "auto",
        "NHWC memory format for the model and its batches (auto: on, CPU too)",
        choices=SWITCH,
    ),
    "autocast": Option("auto", "bf16 autocast of the training step", choices=SWITCH),
    "cudnn_benchmark": Option(
        "auto", "let cuDNN time and pick its conv algorithms", choices=SWITCH
    ),
    "deterministic": Option(
        False,
        "determinism where it is cheap: cudnn.deterministic on and cudnn.benchmark off, "
        "torch.use_deterministic_algorithms (warn only), CUBLAS_WORKSPACE_CONFIG=:4096:8 when "
        "unset; the record's provenance.determinism says what was set",
    ),
    "compile": Option(
        "auto",
        "torch.compile the network's forward (eager, with a warning, where it fails)",
        choices=SWITCH,
    ),
}


def check_recipe(recipe: dict[str, Any]) -> dict[str, Any]:
    """The checks across recipe keys (each key's own are its Option's); returns `recipe`."""
    mean, std = recipe["norm_mean"], recipe["norm_std"]
    if bool(mean) != bool(std) or len(mean) != len(std):
        raise ValueError(
            f"bad values {mean!r} for 'norm_mean' and {std!r} for 'norm_std'; accepted: both empty "
            "(the training split's statistics) or one number per channel each"
        )
    milestones = recipe["milestones"]
    if any(later <= earlier for earlier, later in zip(milestones, milestones[1:])):
        raise ValueError(
            f"bad value {milestones!r} for 'milestones'; accepted: distinct epochs in increasing "
            "order (a repeated epoch would decay the lr twice)"
        )
    if recipe["deterministic"] and recipe["cudnn_benchmark"] == "on":
        raise ValueError(
            "bad values true for 'deterministic' and 'on' for 'cudnn_benchmark'; accepted: "
            "cudnn_benchmark auto or off with deterministic (cuDNN's timed pick is not reproducible)"
        )
    return recipe
