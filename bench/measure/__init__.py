"""The measure wing: what a run measures, on the network, beside training.

Files:
- declare.py: a measure declared once (Measure: name, per-epoch or end-of-run, JSON shape and range, the
  function, the table column), the declared measures found by their files, and the trainer's call of
  them (`take`, `value`); imports no torch at its top, so the record and report wings read it.
- dead_units.py: the fraction of each block's output units no probe image activates (declared, per
  epoch); auxiliary_params.py: the parameters a rule trains in auxiliary modules (declared, end of run).
  A new measure is one more such file (docs/metrics.md, "Declared measures").
- network.py: parameter counts, alignment with BP (signal and update cosines), per-layer ranks, and the
  Undefined error a measure raises where it has no value.
- memory.py: bytes saved for backward, resident-set growth, and the memory breakdown.
- locality.py: the locality facts each rule declares (Locality: weight transport, broadcast, locking,
  auxiliary nets), read by `bench list`; no torch.
- weight_alignment.py: the angle and norm ratio of each forward weight and its feedback weight.
- calibration.py: expected calibration error and per-class accuracy; robustness.py: accuracy under
  FGSM and PGD; end_of_run.py: those measured once after training, each null with its reason when it
  cannot be computed.
It stands on layers/ and models/ only; the run wing calls it, and record/ and report/ read declare.py.
"""
