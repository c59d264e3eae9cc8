"""The speed wing: `python -m bench perf data|step|epoch|load|biotorch`, each tool timing one part of a run.

  data:  images/s of each loader against the torchvision DataLoader doing the same work (data.py);
  step:  training-step time, FLOPs, saved activations and auxiliary bytes of each method vs BP (step/);
  epoch: one epoch of the suite's trainer against a plain PyTorch loop (epoch.py);
  load:  a job's start-up, importing the suite and loading one dataset (load.py);
  biotorch: a rule's step beside the real BioTorch package's, same weights and feedback (biotorch.py).
What more than one of them uses (the model build, the torchvision CIFAR baseline, timers, speed
options, output files, tables) is in common.py. The wing imports the rest of bench; nothing in bench
but the CLI imports the wing.
"""
