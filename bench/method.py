"""The Method API (one learning rule per file in methods/) and discovery of those files."""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import inspect
import os
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.config.names import problem as name_problem
from bench.layout import REPO
from bench.option import Option, resolve_options

# for the hooks' annotations only: importing bench (bench.Option) never imports torch
if TYPE_CHECKING:
    import torch

    from bench.models import BlockNet

METHODS_DIR_ENV = "BENCH_METHODS_DIR"
DEFAULT_METHODS_DIR = REPO / "methods"


class Method:
    """A learning rule: subclass it in methods/<name>.py. This docstring is the whole contract.

    Discovery. Every methods/*.py is imported, sorted by name, except files starting with `_`, `.` or
    `template_` (methods/template_rule.py is a documented, working example to copy). A file defines
    exactly one Method subclass (classes it imports do not count); the file name is the method's
    name, under bench/config/names.py's rule (lowercase, digits, `_`, inner hyphens; not `all`). Method files
    do not import each other: shared code lives in bench/ (bench.local, bench.layers). Nothing else is
    edited to add a rule: `methods: all` grids, `bench list`, the contract test (tests/test_contract.py)
    and the tables pick it up. A file discovery cannot use (a bad name, an error while importing it, not
    exactly one subclass) is kept aside with its reason (`broken_methods`): `bench list` names it, and
    only what uses it is refused (a run of it, a grid that plans it).

    Options. `options = {"name": Option(default, "help", choices=..., minimum=...)}`; the resolved
    values are attributes of the instance (a config variant is the file plus option values).

    Hooks, in the order the trainer calls them:
    - `prepare(model, num_classes, generator, in_shape) -> model`, once, on the CPU, before the model
      moves to its device and before the optimizer exists (`in_shape`: one input's, C x H x W or D).
      Convert layers (bench.layers.swap_layers for a rule with its own backward, convert_to_svd for
      factored layers) and register feedback drawn from `generator` (seeded from the run seed).
      Feedback is counted as feedback wherever it is registered: every buffer (a normalisation
      layer's statistics aside) is feedback, in `model.feedback` or in any layer; a feedback tensor
      the optimizer updates (kp's B) is registered with bench.layers.register_feedback(...,
      learned=True). Feedback is never a trainable parameter.
      Register training-only modules (local heads, decoders) with bench.local.register_auxiliary:
      trained, moved, checkpointed with the network, counted apart as `auxiliary_params` and the
      memory entry `auxiliary`, never as network, feedback or inference parameters.
    - `step(model, x, y) -> dict`, per batch, in train mode, on the device (x: N x C x H x W or N x D,
      channels_last when the recipe says so; y: N class indices; under bf16 autocast when on). Fill
      `.grad` of every trainable parameter (the trainer zeroed them) and of learned feedback; the trainer
      then runs the optimizer. Return 0-d tensors: `loss` (the batch's mean cross-entropy), `correct`
      (a count), and any local loss term (averaged over the epoch into the history). Randomness comes
      only from `self.generator` (a torch.Generator on the device, seeded per run by the trainer, its
      state saved in checkpoints), never from the global RNG.
    - `on_epoch_end(model, epoch) -> {parameter: (dim, kept_index)}`, after each epoch (1-based), for a
      rule that changes the parameter set (rank reduction); the trainer slices optimizer state alike.
    - `fit_ranks(model)`, optional, for a rule whose own tensors follow its SVD layers' ranks (ssa's
      feedback): fit them to the layers' current ranks. On resume the trainer gives the layers a
      checkpoint's ranks (`SVDLayer.keep`), calls it, then requires every tensor at the saved shape.
    - `block_signals(model, outputs, logits, y, x)`, optional: the signal the rule delivers at each
      block output (`outputs` from model.forward_blocks at the rule's `signal_at`; `logits` detached), as a
      gradient of the batch-mean loss. The trainer compares it with the true gradient on a fixed probe
      batch; a rule that returns None (the default) has no block signals, recorded as NaN, not as 1.
    - `block_signal(model, index, output, logits, y, x)`, optional: block `index`'s signal alone, as
      `block_signals(...)[index]`; blockwise mode then makes each signal just before its block learns,
      instead of holding every block's at once.
    - `penalty(model) -> (tensor or None, {name: 0-d tensor})`, optional, for `blockwise` rules: the
      rule's local loss terms that depend on parameters alone (ssa's L_align and L_orth), and what to log.
    - `module_loss(model, index, output, y, x) -> (loss or None, {name: 0-d tensor})`, optional, for a
      rule whose modules learn from local losses: module `index`'s loss on its output (`x`: the step's
      input batch, infopro's reconstruction target; the modules are
      `module_ranges(model)`, contiguous block ranges; declare the shared option bench.local.MODULES
      as `modules` to let a config choose K), backwarded into that module and the auxiliary modules it
      uses only, and the terms to log. The last module also learns from the head's cross-entropy;
      None: no local loss. bench.local.module_losses_step is such a rule's graph-mode `step`.
    A hook written without a later argument (prepare's `in_shape`, the signals' and module_loss's `x`)
    is called without it.

    Locality. A rule whose hidden blocks learn from `block_signals` alone (each signal a function of the
    logits, the labels and fixed or parameter state, never of another block's activations), whose head
    learns from its true cross-entropy gradient and whose other terms are `penalty`'s sets
    `blockwise = True`, as does a rule whose modules learn from `module_loss` alone. The trainer may then
    run it with the recipe key `locality: blockwise` (bench/run/blockwise.py) instead of calling `step`:
    a no-grad forward to the logits, then each block re-run from its kept input with its own graph, its
    signal backwarded and the graph freed before the next (for `module_loss`: the modules first to
    last, each on its detached input, no extra forward), so a step holds one block's (module's) saved
    activations at a time. The gradients equal `step`'s (tests/test_blockwise.py checks it for every
    such rule), and so do the keys it returns: `loss`, `correct`, `penalty`'s and `module_loss`'s terms.
    `blockwise_problem()` returns why the rule's current options do not allow it (None: they do).
    - `state_dict() / load_state_dict(state)`: method-private state that must survive a resume (a
      Python-side counter, a running estimate); tensors and numbers only, with the keys, types and
      shapes of a fresh rule's (a resume checks them before loading). Model tensors (parameters,
      buffers) and the generator are checkpointed by the trainer already.

    Measured by the trainer for every rule, with no code in the rule: parameter counts (trainable,
    feedback, inference, auxiliary), memory, and update alignment: per layer, the cosine between the gradient
    `step` produces on the probe batch and the true BP gradient of the same parameters, computed with
    every swapped layer's exact backward (bench.layers.exact_backward), never through the rule's own.
    """

    name: str = ""
    options: dict[str, Option] = {}
    source: Path | None = None  # the file discovery found it in
    blockwise = False  # True: block_signals + penalty are the whole rule (see Locality above)
    keeps_layers = True  # False: prepare replaces the network's Conv2d/Linear (ssa); see README
    # Required (tests/test_contract.py): what the rule needs, a bench.measure.locality.Locality (weight
    # transport, a global broadcast, backward/update locking, auxiliary nets), shown by `bench list`.
    locality = None

    @classmethod
    def source_hash(cls) -> str | None:
        """sha256 of the rule's file as it is now: the code a run actually ran, tracked by git or not (a new
        rule in methods/ usually is not), so a checkpoint never resumes into an edited rule."""
        return hashlib.sha256(cls.source.read_bytes()).hexdigest() if cls.source else None

    def __init__(self, **options: Any):
        self.config = resolve_options(type(self).options, options, owner=f"method {self.name!r}")
        for key, value in self.config.items():
            setattr(self, key, value)
        import torch  # here, not above: the record and report wings import bench without torch

        # Replaced by the trainer with a generator on the run's device, seeded from the run seed. This
        # default's seed is no small integer, so it never replays a stream that torch.manual_seed(0) drew.
        self.generator = torch.Generator().manual_seed(0x5EED_0F_57E9)

    def prepare(
        self, model: BlockNet, num_classes: int, generator: torch.Generator, in_shape: tuple = ()
    ) -> BlockNet:
        """Convert layers, register feedback (drawn from `generator`) and auxiliary modules."""
        return model

    def step(self, model: BlockNet, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """Fill `.grad` of every trainable parameter for the batch (x, y); return 0-d tensors to log.

        Must return `loss` (the batch's mean cross-entropy) and `correct` (a count); any other
        entry (a local loss term) is averaged over the epoch into the record's history.
        """
        raise NotImplementedError

    def on_epoch_end(self, model: BlockNet, epoch: int) -> dict:
        """After epoch `epoch` (1-based): change the parameter set if the rule does (rank reduction);
        returns {parameter: (dim, kept_index)} for every parameter that was sliced, else {}."""
        return {}

    def fit_ranks(self, model: BlockNet) -> None:
        """Fit the rule's own tensors to its SVD layers' current ranks (none by default)."""

    def block_signals(
        self, model: BlockNet, outputs: list, logits: torch.Tensor, y: torch.Tensor, x=None
    ) -> list[torch.Tensor] | None:
        """The signal this rule delivers at each block output (as a gradient of the batch-mean loss).

        None (the default): the rule defines no block signals; their alignment is recorded as NaN.
        """
        return None

    block_signal = module_loss = None  # optional hooks, as the contract above describes them

    def module_ranges(self, model: BlockNet) -> list[range]:
        """The gradient-isolated modules, as block ranges: the `modules` option's grouping (one per block
        without it; bench.local.module_groups)."""
        from bench.local import module_groups  # here: bench.local imports torch

        return module_groups(model, getattr(self, "modules", 0))

    def penalty(self, model: BlockNet) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
        """A blockwise rule's parameter-only loss terms (None: none) and the 0-d tensors to log."""
        return None, {}

    def blockwise_problem(self) -> str | None:
        """Why `locality: blockwise` cannot run this rule with these options; None where it can."""
        if not self.blockwise:
            return (
                f"{self.name}'s hidden blocks do not learn from an output-error signal alone "
                "(it does not set blockwise = True)"
            )
        return None

    def state_dict(self) -> dict[str, Any]:
        """Method-private state for checkpoints (tensors and numbers); {} for a rule without any."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned (called on resume, after `prepare`)."""
        if state:
            raise ValueError(
                f"method {self.name!r} keeps no state, but its checkpoint holds {sorted(state)}"
            )


def call_hook(hook, *args, **added):
    """hook(*args, **added), each of `added` passed only where the hook's signature names it: a rule
    written before a hook gained an argument (prepare's in_shape, block_signals' x) keeps working."""
    named = inspect.signature(hook).parameters
    return hook(*args, **{k: v for k, v in added.items() if k in named})


def methods_dir() -> Path:
    """Where methods are discovered: $BENCH_METHODS_DIR, else the repository's methods/."""
    return Path(os.environ.get(METHODS_DIR_ENV, DEFAULT_METHODS_DIR))


@dataclass(frozen=True)
class Discovered:
    """What discovery found in a methods folder: the rules by name, and the files it could not use."""

    methods: dict[str, type[Method]]
    broken: dict[str, str]  # file stem -> "method file PATH is broken: why (line N)"


@functools.lru_cache(maxsize=None)
def _discover(directory: Path) -> Discovered:
    if not directory.is_dir():
        raise FileNotFoundError(
            f"methods folder {directory} does not exist (set ${METHODS_DIR_ENV})"
        )
    found, broken = {}, {}
    for path in sorted(directory.glob("*.py")):
        if path.name.startswith(("_", ".", "template_")):
            continue
        try:
            found[path.stem] = _load(path, f"bench_methods_{abs(hash(str(directory)))}")
        except _Unusable as error:
            broken[path.stem] = f"method file {path} is broken: {error}"
    return Discovered(found, broken)


class _Unusable(Exception):
    """A method file that discovery cannot use, and why."""


def _load(path: Path, package: str) -> type[Method]:
    """The one Method subclass of file `path`, imported; _Unusable says why not (its name, an error raised
    while importing it, with the file's line, or not exactly one class)."""
    reason = name_problem(path.stem)
    if reason:
        raise _Unusable(f"its name is no method name: {reason}")
    module_name = f"{package}.{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as error:  # anything a file can raise but Ctrl-C
        del sys.modules[module_name]
        raise _Unusable(_failure(error, path)) from None
    classes = [
        c
        for c in vars(module).values()
        if isinstance(c, type) and issubclass(c, Method) and c.__module__ == module_name
    ]
    if len(classes) != 1:
        del sys.modules[module_name]
        raise _Unusable(f"it must define exactly one bench.Method subclass, found {len(classes)}")
    cls = classes[0]
    cls.name = path.stem
    cls.source = path
    return cls


def _failure(error: BaseException, path: Path) -> str:
    """`error` as one line with the line of `path` it came from (a SyntaxError's own, or the traceback's)."""
    if isinstance(error, SyntaxError) and error.filename == str(path):
        return f"{type(error).__name__}: {error.msg} (line {error.lineno})"
    frames = [f for f in traceback.extract_tb(error.__traceback__) if Path(f.filename) == path]
    where = f" (line {frames[-1].lineno})" if frames else ""
    return f"{type(error).__name__}: {error}{where}"


def discover(directory: Path | str | None = None) -> dict[str, type[Method]]:
    """Every usable method in `directory` (default `methods_dir()`), by file name, sorted."""
    return _discover(Path(directory or methods_dir()).resolve()).methods


def broken_methods(directory: Path | str | None = None) -> dict[str, str]:
    """{file stem: why} of every method file in `directory` that discovery could not use (a bad name,
    an error while importing it, not exactly one Method subclass): nothing else fails because of it."""
    return _discover(Path(directory or methods_dir()).resolve()).broken


def get_method(name: str, directory: Path | str | None = None) -> type[Method]:
    """The Method class of file `name`; a ValueError says why a broken file cannot run, or lists the
    known names."""
    known = discover(directory)
    if name in known:
        return known[name]
    broken = broken_methods(directory)
    if name in broken:
        raise ValueError(f"method {name!r}: {broken[name]}")
    raise ValueError(f"unknown method {name!r}; known: {', '.join(known)}")
