"""The run record (record.json) as types: Record, with its Epoch history, Memory and Provenance.

A record is written once, by the trainer (bench/run/outputs.py builds it from a finished run), and read
by everything else through `read` and `find`, which check the schema version and every value
(bench/record/check.py), the fields against each other and the declared recipe and options
(bench/record/consistency.py), and refuse a key the trainer never writes or writes twice, naming the
file and the key. The
nested measures (per-layer alignments, ranks, the attacks' accuracies by budget) stay plain mappings:
their keys are layer, class or budget names, not fields.

Records of schema 1 written before a field existed (ECE and robustness before issue 21, the arch facts
before issue 19) read with that field None, except the arch facts, which are filled from what the record
holds (`blocks`: the last epoch's per-block alignment; `convolutional`: the arch's declared kind).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import layout
from bench.models import convolutional
from bench.record.check import MAX_DEPTH, check_record, depth, once, refusal

SCHEMA_VERSION = 1
Run = tuple[str, str, int]  # (arch, method, seed)
# A record of 300 epochs with every per-layer measure is well under 1 MiB; a file past this is no record
# (and a device or a pipe named record.json would be read without end).
MAX_BYTES = 64 * 2**20


# A field's JSON type, from its annotation (this module's annotations are strings).
_JSON_TYPES = {
    "str": (str, "a string"),
    "int": (int, "an integer"),
    "float": ((int, float), "a number"),
    "bool": (bool, "true or false"),
    "dict": (dict, "an object"),
    "list": (list, "a list"),
}


def _check_type(spec: dataclasses.Field, value, path, key: str) -> None:
    kinds = [k.strip() for k in str(spec.type).split("|")]
    if value is None and "None" in kinds:
        return
    for kind in (k for k in kinds if k != "None"):
        types, accepted = _JSON_TYPES.get(kind, (None, None))
        if types is None:
            return  # a nested record type: checked as it is built
        right = isinstance(value, types) and not (isinstance(value, bool) and kind != "bool")
        if right:
            return
    raise refusal(path, key, value, ("null or " if "None" in kinds else "") + accepted)


def _from_json(cls, data, path: Path | str, where: str):
    """`cls` from its JSON object, each value of its field's JSON type; a key that is not a field is
    refused (a foreign or hand-edited file), and so is a field without a default that is missing."""
    if not isinstance(data, dict):
        raise refusal(path, where.rstrip("."), data, "an object")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [key for key in data if key not in fields]
    if unknown:
        raise ValueError(
            f"{path}: unknown key {where + unknown[0]!r} in a record; accepted: {', '.join(fields)}"
        )
    for name, spec in fields.items():
        if name in data:
            _check_type(spec, data[name], path, where + name)
        elif spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING:
            raise ValueError(f"{path}: record has no {where + name!r}")
    return cls(**data)


@dataclass(frozen=True)
class Memory:
    """Bytes at the end of training (bench/measure/memory.py memory_breakdown); `peak_kind` says what `peak` is."""

    params: int | None = None
    grads: int | None = None
    optimizer_state: int | None = None
    feedback: int | None = None
    auxiliary: int | None = None  # auxiliary modules' parameters, gradients, optimizer state
    saved_activations: int | None = None
    peak: int | None = None
    peak_kind: str | None = None
    device: str | None = None


@dataclass(frozen=True)
class Provenance:
    """What produced the record (bench/run/provenance.py), plus what the trainer resolved on the device."""

    git_commit: str | None = None
    git_dirty: bool | None = None
    python: str | None = None
    torch: str | None = None
    torchvision: str | None = None
    ffcv: str | None = None
    device_name: str | None = None
    platform: str | None = None
    started: str | None = None
    world_size: int | None = None
    method_sha256: str | None = None
    threads: int | None = None
    speed: dict | None = None
    determinism: dict | None = None


@dataclass(frozen=True)
class Epoch:
    """One epoch of the history: training, test (and validation) accuracy, and the per-epoch measures."""

    epoch: int
    train_loss: float | None = None
    train_acc: float | None = None
    test_acc: float | None = None
    test_top5: float | None = None
    lr: float | None = None
    train_time_s: float | None = None
    images_per_s: float | None = None
    saved_activations: int | None = None
    peak_memory: int | None = None
    terms: dict = field(default_factory=dict)  # the rule's local loss terms, by name
    alignment: list | None = None  # per block: cosine of the rule's signal with BP's
    update_alignment: dict | None = None  # per layer: cosine of the update with BP's gradient
    weight_alignment: dict | None = None  # angle_deg and norm_ratio of (W, B) per swapped layer
    ranks: dict | None = None
    trainable_params: int | None = None
    val_acc: float | None = None
    measures: dict | None = (
        None  # the declared per-epoch measures by name (bench/measure/declare.py)
    )


@dataclass(frozen=True, kw_only=True)
class Record:
    """One run's record: what ran (the spec), how it ended, the measures, its history and provenance.
    Fields in the order record.json holds them."""

    schema_version: int = SCHEMA_VERSION
    dataset: str
    arch: str
    method: str  # the variant name, e.g. ssa-no_align
    impl: str | None = None  # the method file it ran
    seed: int
    recipe: dict = field(default_factory=dict)
    options: dict = field(default_factory=dict)
    config_hash: str | None = None
    status: str  # ok or diverged
    epochs: int | None = None
    epochs_planned: int | None = None
    num_classes: int | None = None
    blocks: int | None = None  # the network's blocks (its feedback points)
    convolutional: bool | None = None  # whether the network has a convolution
    # the layers the rule gave a feedback backward, and (where it gave some) the other layers with
    # parameters, with their type: bench/measure/network.py converted_layers
    converted_layers: list | None = None
    unconverted_layers: list | None = None
    test_acc: float | None
    test_top5: float | None = None
    best_test_acc: float | None = None
    selection: str | None = None  # which epoch the table reports: best_val or last
    selected_epoch: int | None = None
    selected_test_acc: float | None = None
    best_val_acc: float | None = None
    train_time_s: float | None = None
    images_per_s: float | None = None
    trainable_params: int | None = None
    feedback_params: int | None = None
    inference_params: int | None = None
    trainable_params_initial: int | None = None
    memory: Memory
    history: tuple[Epoch, ...]
    provenance: Provenance = field(default_factory=Provenance)
    ece: float | None = None
    per_class_acc: dict | None = None
    eval_time_s: float | None = None
    robustness: dict | None = None  # bench/measure/robustness.py: accuracies under attack by budget
    unmeasured: dict | None = (
        None  # end-of-run measure -> why it is null (bench/measure/end_of_run.py)
    )
    measures: dict | None = (
        None  # the declared end-of-run measures by name (bench/measure/declare.py)
    )

    @property
    def run(self) -> Run:
        return (self.arch, self.method, self.seed)

    @property
    def last(self) -> Epoch | None:
        """The last epoch of the history (None for a run that trained none)."""
        return self.history[-1] if self.history else None

    def to_json(self) -> dict:
        """The JSON object of record.json (every field, null where not measured)."""
        data = dataclasses.asdict(self)
        data["history"] = list(data["history"])
        return data

    @classmethod
    def from_json(cls, data: Any, path: Path | str = "record.json") -> Record:
        """A record from its JSON object: schema version, values and keys checked, naming `path`."""
        if not isinstance(data, dict):
            raise ValueError(f"{path}: not a record (a JSON object); got {type(data).__name__}")
        if depth(data) > MAX_DEPTH:  # a reader of it (dataclasses.asdict) would recurse without end
            raise ValueError(f"{path}: nested deeper than {MAX_DEPTH} levels; no record is")
        if data.get("schema_version") != SCHEMA_VERSION:
            raise ValueError(
                f"{path}: schema_version {data.get('schema_version')!r}; accepted: {SCHEMA_VERSION}"
            )
        if not isinstance(data.get("history", []), list):
            raise ValueError(f"{path}: bad value for 'history'; accepted: a list of epochs")
        nested = {
            "history": tuple(
                _from_json(Epoch, entry, path, f"history[{i}].")
                for i, entry in enumerate(data.get("history", []))
            ),
            "memory": _from_json(Memory, data.get("memory", {}), path, "memory."),
            "provenance": _from_json(Provenance, data.get("provenance", {}), path, "provenance."),
        }
        record = _from_json(cls, data | {k: v for k, v in nested.items() if k in data}, path, "")
        check_record(data, path)  # the values' ranges and shapes, now that their types are right
        return _with_arch_facts(record)


def _with_arch_facts(record: Record) -> Record:
    """Fill the arch facts of a record written before the trainer wrote them, from what it holds."""
    facts = {}
    if record.blocks is None and record.last is not None and record.last.alignment is not None:
        facts["blocks"] = len(record.last.alignment)
    if record.convolutional is None:
        facts["convolutional"] = convolutional(record.arch)
    return dataclasses.replace(record, **facts) if facts else record


def read(path: Path | str) -> Record:
    """One record.json, checked (a ValueError names the file and the key)."""
    path = Path(path)
    try:
        regular = path.is_file()
        if regular:
            with path.open("rb") as file:
                raw = file.read(MAX_BYTES + 1)
    except OSError as error:
        raise ValueError(f"{path}: not a readable record.json ({error})") from None
    if not regular:
        raise ValueError(f"{path}: not a regular file; a record.json is one")
    if len(raw) > MAX_BYTES:
        raise ValueError(f"{path}: over {MAX_BYTES // 2**20} MiB; no record.json is that large")
    try:
        data = json.loads(raw.decode(), object_pairs_hook=once)
    except RecursionError:  # a list in a list ... 100,000 deep
        raise ValueError(
            f"{path}: not a readable record.json (nested deeper than {MAX_DEPTH} levels)"
        ) from None
    except ValueError as error:  # JSON syntax or UTF-8, a key twice, a 5000-digit integer
        raise ValueError(f"{path}: not a readable record.json ({error})") from None
    return Record.from_json(data, path)


def find(runs_dir: Path | str, dataset: str) -> dict[Run, Record]:
    """Every record of `dataset` under runs_dir (bench.layout's run folders), keyed by (arch, method, seed);
    a record whose folder names another run is refused."""
    found = {}
    for path, arch, method, seed in layout.find_records(runs_dir, dataset):
        record = read(path)
        if (record.dataset, *record.run) != (dataset, arch, method, seed):
            raise ValueError(
                f"{path}: record is for {record.dataset}/{'/'.join(map(str, record.run))}, "
                "not the run its folder names"
            )
        found[record.run] = record
    return found
