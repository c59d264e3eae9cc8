"""The typed record (bench/record/types.py): every committed record reads, loses nothing on the way back to
JSON, and a foreign or hand-edited file is refused naming the file and the key."""

import dataclasses
import json
from pathlib import Path

import pytest
from synthetic_records import write_record

from bench.models import FULLY_CONNECTED, build, convolutional
from bench.record import SCHEMA_VERSION, Epoch, Memory, Provenance, Record, find, read

REPO = Path(__file__).resolve().parent.parent
COMMITTED = sorted(REPO.glob("results/**/record.json"))


def test_the_evidence_holds_committed_records():
    assert (
        len(COMMITTED) > 100
    )  # the CPU evidence of earlier issues: the round trip below covers them


@pytest.mark.parametrize("path", COMMITTED[::7], ids=lambda p: str(p.relative_to(REPO)))
def test_a_committed_record_round_trips_without_losing_or_changing_a_value(path):
    data = json.loads(path.read_text())
    record = read(path)
    assert isinstance(record.memory, Memory) and isinstance(record.provenance, Provenance)
    assert all(isinstance(e, Epoch) for e in record.history)
    back = record.to_json()
    # every key the file holds comes back with its value; fields the file predates come back null
    # (or, for the arch facts, filled from what the record holds)
    for key, value in data.items():
        if key == "history":
            for written, entry in zip(value, back["history"]):
                assert {k: entry[k] for k in written} == written
        elif isinstance(value, dict) and key in ("memory", "provenance"):
            assert {k: back[key][k] for k in value} == value
        else:
            assert back[key] == value, key
    assert Record.from_json(json.loads(json.dumps(back))) == record


def test_every_committed_record_reads():
    for path in COMMITTED:
        assert read(path).schema_version == SCHEMA_VERSION


def test_arch_facts_of_an_older_record_are_filled_from_what_it_holds(tmp_path):
    data = write_record(tmp_path, "mlp3", "dfa", 0, 50.0, dataset="digits")
    assert "blocks" not in data and "convolutional" not in data
    record = read(tmp_path / "digits" / "mlp3" / "dfa" / "seed0" / "record.json")
    assert record.blocks == 2  # the synthetic record's per-block alignment has two blocks
    assert record.convolutional is False
    # what the trainer wrote wins (a `blocks` that contradicts the alignment is refused: test_record_consistency)
    data = record.to_json() | {"blocks": 7, "convolutional": True}
    data["history"] = [entry | {"alignment": None} for entry in data["history"]]
    written = Record.from_json(data)
    assert (written.blocks, written.convolutional) == (7, True)


@pytest.mark.parametrize("arch", ["mlp3", "smallconv", "lenet"])
def test_the_declared_convolutional_fact_is_the_built_networks(arch):
    import torch.nn as nn

    model = build(arch, (3, 32, 32), 10)
    has_conv = any(isinstance(m, nn.Conv2d) for m in model.modules())
    assert convolutional(arch) == has_conv and (arch in FULLY_CONNECTED) == (not has_conv)


def test_the_trainer_writes_the_arch_facts_and_returns_what_a_reader_reads(fa_digits_run):
    runs, on_disk = fa_digits_run
    record = read(runs / "digits" / "mlp3" / "fa" / "seed0" / "record.json")
    assert record.blocks == len(record.last.alignment) == 3 and record.convolutional is False
    assert list(on_disk) == [f.name for f in dataclasses.fields(Record)]  # the file's key order


def test_a_record_is_frozen(tmp_path):
    write_record(tmp_path, "mlp3", "bp", 0, 50.0)
    record = read(tmp_path / "toy" / "mlp3" / "bp" / "seed0" / "record.json")
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.test_acc = 99.0


@pytest.mark.parametrize(
    "change, named",
    [
        (lambda r: r.update(surprise=1), "unknown key 'surprise'"),
        (
            lambda r: r["history"][0].update(loss_of_the_day=1),
            "unknown key 'history[0].loss_of_the_day'",
        ),
        (lambda r: r["memory"].update(vram=1), "unknown key 'memory.vram'"),
        (lambda r: r["provenance"].update(hostname="x"), "unknown key 'provenance.hostname'"),
        (lambda r: r.update(provenance=[1]), "'provenance'"),
        (lambda r: r["history"][1].update(test_acc=150.0), "'history[1].test_acc'"),
        (lambda r: r["history"][0].update(train_loss="low"), "'history[0].train_loss'"),
        (lambda r: r["history"][0].update(lr=True), "'history[0].lr'"),
        (lambda r: r["history"][0].update(epoch=0), "'history[0].epoch'"),
        (lambda r: r["history"][0].pop("epoch"), "'history[0].epoch'"),
        (lambda r: r.update(recipe=None), "'recipe'; accepted: an object"),
        (lambda r: r.update(options=[]), "'options'; accepted: an object"),
        (
            lambda r: r.update(convolutional="no"),
            "'convolutional'; accepted: null or true or false",
        ),
        (lambda r: r.update(blocks="3"), "'blocks'"),
        (lambda r: r.update(num_classes=-1), "'num_classes'"),
        (lambda r: r.update(selection="best", selected_test_acc=50.0), "'selection'"),
        (lambda r: r.update(selection="last"), "'selected_test_acc' come together"),
        (lambda r: r["memory"].update(device=0), "'memory.device'; accepted: null or a string"),
        (lambda r: r["provenance"].update(speed="fast"), "'provenance.speed'"),
        (lambda r: r["history"][0].update(test_acc=float("inf")), "'history[0].test_acc'"),
        (lambda r: r["history"][0].update(alignment="abc"), "'history[0].alignment'"),
        (lambda r: r["history"][0].update(alignment=[0.5, 1.5]), "'history[0].alignment'"),
        (lambda r: r["history"][0].update(update_alignment=[1]), "'history[0].update_alignment'"),
        (lambda r: r["history"][0].update(ranks={"a": -1}), "'history[0].ranks.a'"),
        (lambda r: r["history"][0].update(terms=None), "'history[0].terms'"),
        (
            lambda r: r["history"][0].update(weight_alignment={"angle_deg": {"a": 200.0}}),
            "'history[0].weight_alignment.angle_deg.a'",
        ),
        (lambda r: r.update(per_class_acc=[1]), "'per_class_acc'"),
        (lambda r: r.update(schema_version=2), "schema_version 2; accepted: 1"),
        (lambda r: r.pop("memory"), "record has no 'memory'"),
    ],
)
def test_a_foreign_or_hand_edited_record_is_refused_naming_the_file_and_key(
    tmp_path, change, named
):
    data = write_record(tmp_path, "mlp3", "bp", 0, 50.0)
    data["provenance"]["speed"] = {}
    change(data)
    path = tmp_path / "toy" / "mlp3" / "bp" / "seed0" / "record.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="record.json") as error:
        read(path)
    assert named in str(error.value)


@pytest.mark.parametrize("text", ["", "[1, 2]", '{"schema_version": 1', "\udcff"])
def test_a_file_that_is_no_record_object_is_refused(tmp_path, text):
    path = tmp_path / "record.json"
    path.write_bytes(text.encode(errors="surrogateescape"))
    with pytest.raises(ValueError, match=str(path)):
        read(path)


def test_a_diverged_epoch_reads_with_its_loss_null(tmp_path):
    data = write_record(tmp_path, "mlp3", "bp", 0, 10.0, status="diverged")
    data["history"][-1]["train_loss"] = None  # NaN, as record.json writes it
    path = tmp_path / "toy" / "mlp3" / "bp" / "seed0" / "record.json"
    path.write_text(json.dumps(data))
    assert read(path).last.train_loss is None


def test_find_keys_records_by_run_and_refuses_one_in_another_runs_folder(tmp_path):
    write_record(tmp_path, "mlp3", "bp", 0, 50.0)
    write_record(tmp_path, "mlp3", "dfa", 1, 40.0)
    found = find(tmp_path, "toy")
    assert set(found) == {("mlp3", "bp", 0), ("mlp3", "dfa", 1)}
    assert found["mlp3", "dfa", 1].run == ("mlp3", "dfa", 1)
    moved = tmp_path / "toy" / "mlp3" / "bp" / "seed3"
    moved.mkdir()
    (moved / "record.json").write_text(
        (tmp_path / "toy" / "mlp3" / "bp" / "seed0" / "record.json").read_text()
    )
    with pytest.raises(ValueError, match="not the run its folder names"):
        find(tmp_path, "toy")


def test_null_measures_and_an_older_records_missing_fields_read(tmp_path):
    data = write_record(tmp_path, "mlp3", "bp", 0, 50.0)
    data["history"][0].update(alignment=[None, None], weight_alignment={"angle_deg": None})
    data["memory"] = {"params": None}
    del data["provenance"]
    path = tmp_path / "toy" / "mlp3" / "bp" / "seed0" / "record.json"
    path.write_text(json.dumps(data))
    record = read(path)
    assert record.memory.grads is None and record.provenance.git_commit is None
    from bench.report.records import layer_mean

    assert layer_mean(record.history[0].weight_alignment, "angle_deg") is None


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
def test_a_device_named_record_json_is_refused_not_read_without_end(tmp_path):
    path = tmp_path / "record.json"
    path.symlink_to("/dev/zero")
    with pytest.raises(ValueError, match="not a regular file"):
        read(path)


def test_a_record_json_past_the_size_limit_is_refused(tmp_path, monkeypatch):
    import bench.record.types

    write_record(tmp_path, "mlp3", "bp", 0, 50.0)
    path = tmp_path / "toy" / "mlp3" / "bp" / "seed0" / "record.json"
    monkeypatch.setattr(bench.record.types, "MAX_BYTES", path.stat().st_size - 1)
    with pytest.raises(ValueError, match="no record.json is that large"):
        read(path)
    monkeypatch.setattr(bench.record.types, "MAX_BYTES", path.stat().st_size)
    assert read(path).method == "bp"
