"""The run wing: one run from its spec to its record (`python -m bench train`).

Layers, each importing only those above it in this list:
- stop.py: stop requests (Ctrl-C, SIGTERM) that cannot be lost; determinism.py (recipe key
  `deterministic`); devices.py: which GPU a run claims; speed.py: the device and the speed options;
  provenance.py: what produced a record; tensorboard.py: the optional TensorBoard view.
- optim.py: optimizer, schedule, and the optimizer state a rank change slices; layer_options.py:
  BioTorch's layer options `constrain_weights` and `grad_clip` on the network's Conv2d and Linear layers.
- blockwise.py: the recipe key `locality` (how a local rule's step holds its graph).
- epoch.py: one training epoch and the per-epoch test evaluation.
- outputs.py: what a run writes (the Record, the epoch its table reports, log.csv).
- checkpoint.py: checkpoints written atomically and read back checked; restore.py: a checkpoint
  restored into freshly built objects, and the run folder made ready.
- train.py: the trainer (setup, the epoch loop, the per-epoch measures, the end-of-run measures, the
  record), and derive_seed.
It stands on config/ (the spec), data/, models/, measure/ (what it measures) and record/ (what it writes).
"""
