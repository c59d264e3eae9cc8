"""The config wing: every config file read, checked and expanded, and one run's spec resolved.

Layers, each importing only those above it in this list:
- names.py: the one rule for names (method files, variants, sweeps, points, archs); a leaf that
  bench/method.py and bench/record/ import too.
- yamlfile.py: strict YAML reading (no duplicate keys, no aliases, data only).
- recipe.py: RECIPE, the training recipe's keys declared once, and the checks across keys.
- spec.py: RunSpec, a method variant resolved to (impl, options, recipe), and --set.
- schema.py: the config's JSON schema (its recipe block generated from RECIPE) and the one check.
- sweep.py: sweeps expanded into method variants.
- grid.py: the pipeline config expanded into planned runs, and which .beton files a grid entry reads.
- files.py: load_config (every config file read, merged, checked and expanded once, as a typed Config)
  and config_argument (the command line's --config).
Nothing here imports torch, the run wing or anything below it in bench/'s layers (tests/test_import_layers.py).
"""
