"""The report wing: run records -> tables, figures, claims.md and a sweep's findings.md.

Layers, each importing only those above it in this list:
- records.py: the typed records (bench/record/types.py) of the planned runs, and the values of one record a
  report shows.
- summary.py: the one summary of a group of runs (n_ok, n_diverged, mean, sample std, standard error,
  pooled std); markdown.py: the one markdown table writer and its cell formats; plotting.py: what the
  figures share; published.py: the cited figures of config/published.csv, checked as a whole.
- table.py (`python -m bench aggregate`), figures.py and curves.py (`plot`), claims/ (`claims`),
  findings.py (`sweep-report`).
Nothing in bench/ outside this package imports it but the command line (bench/cli/commands.py) and the Snakefile.
It reads records only, and none of its modules imports torch (tests/test_light_imports.py).
"""
