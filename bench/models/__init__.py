"""Architectures by name: `build(name, in_shape, num_classes)` returns a BlockNet.

Files: archs.py, the name table ARCHS (one line per architecture), `check_arch` and `build`; blocknet.py,
the BlockNet every builder returns; small.py, resnet.py, vgg.py, mobilenet.py, the builders by family;
zoo.py, torchvision's classification models as BlockNets (arch `tv-<model>`); init.py, the weight-init
schemes. This file holds what a reader of records or of the recipe knows of the archs without
building one, and imports no torch: the record and report wings read it, and so does the recipe
(`weight_init`'s choices). `ARCHS`, `check_arch`, `build`, `build_for`, `BlockNet` and `initialise` are imported
from their files (with torch) when first asked for here.
"""

from __future__ import annotations

import importlib

from bench.config.names import TORCHVISION_PREFIX

# The weight_init names (the recipe key's choices, in order): init.py draws each (its DRAWS).
SCHEMES = ("default", "kaiming_normal", "kaiming_uniform", "xavier_normal", "xavier_uniform")
# Which layers a scheme re-draws (`weight_init_scope`): the hidden blocks, or all (the head too).
SCOPES = ("hidden", "all")

# The archs without a convolution (every hidden block fully connected). A declared fact, so that a report
# (claims.md's claim 3) knows it without building a network; tests/test_models.py checks it on every arch.
FULLY_CONNECTED = frozenset({"mlp3"})


def torchvision_model(arch: str) -> str | None:
    """The torchvision model an arch names (`tv-resnet18` -> resnet18; bench/config/names.py spells it),
    None for one of the suite's own archs."""
    return arch[len(TORCHVISION_PREFIX) :] if arch.startswith(TORCHVISION_PREFIX) else None


def convolutional(name: str) -> bool:
    """Whether arch `name` has a convolution; a name this code does not know (a record of an arch since
    removed) counts as convolutional, the common case."""
    return name not in FULLY_CONNECTED


# The names whose files import torch: each is loaded when first used (PEP 562).
_HEAVY = {
    "ARCHS": "bench.models.archs",
    "check_arch": "bench.models.archs",
    "build": "bench.models.archs",
    "build_for": "bench.models.archs",
    "BlockNet": "bench.models.blocknet",
    "initialise": "bench.models.init",
}


def __getattr__(name: str):
    if name in _HEAVY:
        return getattr(importlib.import_module(_HEAVY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
