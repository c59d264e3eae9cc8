"""The record wing: a run's record.json as types, and the checks it passes before it becomes one.

Layers, each importing only those below it in this list:
- types.py: the typed record (Record, with its Epoch history, Memory and Provenance; Run names one run),
  read from record.json by `read` and `find` alone, which refuse a file over MAX_BYTES, a key written
  twice or one the trainer never writes, and any value check.py refuses.
- check.py: each value alone (its range and shape, a declared measure's from its declaration; STATUSES, COUNTS, ... that the
  trainer and the report share), and what the JSON itself may be (each key once, at most MAX_DEPTH deep).
- consistency.py: the record as a whole (the fields against each other, the recipe and options against
  what bench/config/recipe.py and the rule declare).
The trainer builds a record in bench/run/outputs.py (it imports torch: the run's side, not this package's).
Importing this package never imports torch (tests/test_light_imports.py): the report wing reads records
through it alone.
"""

from bench.record.types import (
    MAX_BYTES,
    SCHEMA_VERSION,
    Epoch,
    Memory,
    Provenance,
    Record,
    Run,
    find,
    read,
)

__all__ = [
    "MAX_BYTES",
    "SCHEMA_VERSION",
    "Epoch",
    "Memory",
    "Provenance",
    "Record",
    "Run",
    "find",
    "read",
]
