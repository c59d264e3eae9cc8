"""A record is checked as a whole (bench/record/consistency.py): committed records, hand-edited so that each
value alone is plausible but the fields contradict each other or the declared recipe and options, are
refused naming the file and the key; so are a key written twice, a record nested without end and a number
Python will not read."""

import json
from pathlib import Path

import pytest

from bench.record import read
from bench.report.table import aggregate

REPO = Path(__file__).resolve().parent.parent
RUNS = REPO / "results" / "cpu_robustness_cifar10" / "runs"
# 4 epochs, selection last, per-class accuracies, the whole recipe, dfa's options
LAST = RUNS / "cifar10-jpeg" / "smallconv" / "dfa" / "seed0" / "record.json"
# 20 epochs, val_split 5000: selection best_val (epoch 11 of 20)
BEST_VAL = REPO / "results/cpu_biotorch_lenet/runs/cifar10-jpeg/lenet/bp/seed0/record.json"


def edited(tmp_path: Path, source: Path, change) -> Path:
    """A copy of the committed record `source` under tmp_path (the run folder it names), after `change`."""
    data = json.loads(source.read_text())
    change(data)
    folder = tmp_path / data["dataset"] / data["arch"] / data["method"] / f"seed{data['seed']}"
    folder.mkdir(parents=True)
    (folder / "record.json").write_text(json.dumps(data))
    return folder / "record.json"


def refused(path: Path, key: str) -> str:
    with pytest.raises(ValueError) as error:
        read(path)
    message = str(error.value)
    assert message.startswith(str(path)) and key in message, message
    return message


def shorten(data: dict, epochs: int) -> None:
    """The record of a run that planned `epochs`: its history cut there, its summary the last epoch's."""
    data["history"] = data["history"][:epochs]
    last = data["history"][-1]
    data |= {"epochs": epochs, "epochs_planned": epochs, "test_acc": last["test_acc"]}
    data |= {"test_top5": last["test_top5"], "selected_epoch": epochs}
    data |= {"selected_test_acc": last["test_acc"], "recipe": data["recipe"] | {"epochs": epochs}}
    data["best_test_acc"] = max(h["test_acc"] for h in data["history"])
    rehash(data)


def rehash(data: dict) -> None:
    """The config_hash of the spec `data` names now, as the trainer writes it."""
    from bench.config.spec import RunSpec

    named = [data[key] for key in ("dataset", "arch", "method", "impl", "seed")]
    data["config_hash"] = RunSpec(*named, data["recipe"], data["options"]).config_hash()


@pytest.mark.parametrize("source", [LAST, BEST_VAL], ids=["last", "best_val"])
def test_the_committed_records_these_cases_edit_read_and_agree(tmp_path, source):
    record = read(edited(tmp_path, source, lambda r: None))
    assert record.epochs == len(record.history) == record.epochs_planned
    assert record.test_acc == record.history[-1].test_acc
    chosen = record.history[record.selected_epoch - 1]
    assert record.selected_test_acc == chosen.test_acc
    assert (record.selection, record.selected_epoch) in (("last", 4), ("best_val", 11))


def test_a_shortened_record_reads_as_the_trainer_would_write_it(tmp_path):
    record = read(edited(tmp_path, LAST, lambda r: shorten(r, 2)))  # the helper below is honest
    assert (record.epochs, record.selected_epoch) == (2, 2)


def _set_history(key, values):
    def change(r):
        for entry, value in zip(r["history"], values):
            entry[key] = value

    return change


def diverge(data: dict) -> None:
    """The record of a run whose last epoch's loss was not finite (null in record.json)."""
    data["status"] = "diverged"
    data["history"][-1]["train_loss"] = None


def diverge_undefined(data: dict) -> None:
    """A diverged run whose last network was not finite: that epoch's accuracies are null (undefined)."""
    diverge(data)
    data["history"][-1].update(test_acc=None, test_top5=None, val_acc=None)
    data.update(test_acc=None, test_top5=None)


# A record of no epoch: what bench/run/outputs.py writes for an empty history.
NO_EPOCH = dict(epochs=0, history=[], test_acc=None, test_top5=None, best_test_acc=None)
NO_EPOCH |= dict(selected_epoch=None, selected_test_acc=None)

CONTRADICTIONS = [
    # the reported epoch
    (LAST, lambda r: r.update(selected_epoch=7), "'selected_epoch'"),
    (LAST, lambda r: r.update(selected_test_acc=99.0), "'selected_test_acc'"),
    (BEST_VAL, lambda r: r.update(selected_epoch=20), "'selected_epoch'"),
    (BEST_VAL, lambda r: r.update(selected_test_acc=r["test_acc"]), "'selected_test_acc'"),
    (BEST_VAL, lambda r: r.update(best_val_acc=99.0), "'best_val_acc'"),
    (BEST_VAL, lambda r: r.update(selection="last"), "'selection'"),
    (LAST, lambda r: r.update(selection="best_val"), "'selection'"),
    (BEST_VAL, lambda r: r["recipe"].update(val_split=0), "'recipe.val_split'"),
    (BEST_VAL, lambda r: r["history"][10].update(val_acc=40.0), "'selected_epoch'"),
    (BEST_VAL, diverge_undefined, None),  # a null val_acc, test_acc: undefined, never the best
    (BEST_VAL, lambda r: (diverge_undefined(r), r.update(best_test_acc=None)), "'best_test_acc'"),
    (LAST, lambda r: r.update(best_val_acc=50.0), "'best_val_acc'"),
    (LAST, lambda r: r.update(selection=None), "'selected_epoch'"),
    # the epochs
    (LAST, lambda r: r.update(epochs=5), "'epochs'"),
    (LAST, lambda r: r.update(epochs_planned=6), "'epochs_planned'"),
    (LAST, _set_history("epoch", [1, 1, 1, 1]), "'history[1].epoch'"),
    (LAST, _set_history("epoch", [2, 1, 3, 4]), "'history[0].epoch'"),
    (LAST, lambda r: (shorten(r, 3), r.update(epochs_planned=4)), "'epochs_planned'"),
    (
        LAST,
        lambda r: (shorten(r, 3), r.update(epochs_planned=4), r["recipe"].update(epochs=4)),
        "'status'",
    ),
    # the status against the losses
    (LAST, lambda r: r.update(status="diverged"), "'status'"),
    (LAST, lambda r: r["history"][1].update(train_loss=None), "'history[1].train_loss'"),
    # the outcome against the history
    (LAST, lambda r: r.update(test_acc=r["test_acc"] + 1), "'test_acc'"),
    (BEST_VAL, lambda r: r.update(test_acc=r["selected_test_acc"]), "'test_acc'"),
    (LAST, lambda r: r.update(best_test_acc=r["best_test_acc"] - 1), "'best_test_acc'"),
    (LAST, lambda r: r.update(test_top5=99.0), "'test_top5'"),
    (LAST, lambda r: (diverge(r), r.update(test_acc=None)), "'test_acc'"),
    (LAST, diverge, None),  # the same diverged record with its last test accuracy reads
    (LAST, lambda r: (shorten(r, 4), r.update(**NO_EPOCH)), "'status'"),  # planned 4, trained 0
    # shapes
    (LAST, lambda r: r.update(num_classes=7), "'num_classes'"),
    (LAST, lambda r: r.update(blocks=5), "'history[0].alignment'"),
    # the recipe against RECIPE
    (LAST, lambda r: r["recipe"].update(lr="fast"), "'recipe.lr'"),
    (LAST, lambda r: r["recipe"].update(lr="0.01"), "'recipe.lr'"),
    (LAST, lambda r: r["recipe"].update(epochs=-5), "'recipe.epochs'"),
    (LAST, lambda r: r["recipe"].update(epochs=4.0), "'recipe.epochs'"),
    (LAST, lambda r: r["recipe"].update(optimizer="lbfgs"), "'recipe.optimizer'"),
    (LAST, lambda r: r["recipe"].update(milestones=[2, "x"]), "'recipe.milestones'"),
    (LAST, lambda r: r["recipe"].update(flip="yes"), "'recipe.flip'"),
    (LAST, lambda r: r["recipe"].update(warp_drive=True), "'recipe.warp_drive'"),
    (LAST, lambda r: r["recipe"].update(norm_mean=[0.5], norm_std=[]), "recipe: bad values"),
    # the spec against its hash: each new value alone is accepted
    (LAST, lambda r: r["recipe"].update(lr=0.5), "'config_hash'"),
    (LAST, lambda r: r.update(seed=5), "'config_hash'"),
    (LAST, lambda r: r["options"].update(scale=2.0), "'config_hash'"),
    # the options against the rule's declared ones
    (LAST, lambda r: r["options"].update(scale="big"), "'options.scale'"),
    (LAST, lambda r: r["options"].update(init="gaussian_plus"), "'options.init'"),
    (LAST, lambda r: r["options"].update(lambda_align=1.0), "'options.lambda_align'"),
]


@pytest.mark.parametrize(
    "source, change, key",
    CONTRADICTIONS,
    ids=[f"{i}-{str(key).strip(chr(39))}" for i, (_, _, key) in enumerate(CONTRADICTIONS)],
)
def test_a_record_whose_fields_contradict_is_refused_naming_file_and_key(
    tmp_path, source, change, key
):
    path = edited(tmp_path, source, change)
    if key is None:  # the control: an edit that keeps the record consistent
        assert read(path).status == "diverged"
        return
    assert "accepted" in refused(path, key)


def test_the_table_refuses_a_contradicting_record_naming_it(tmp_path):
    path = edited(tmp_path, LAST, lambda r: r.update(selected_epoch=7))
    with pytest.raises(ValueError, match="'selected_epoch'") as error:
        aggregate(tmp_path, "cifar10-jpeg", out_dir=tmp_path / "tables")
    assert str(path) in str(error.value) and not (tmp_path / "tables").exists()


def test_a_record_of_a_rule_whose_file_is_gone_reads_with_plain_options(tmp_path):
    def gone(r):
        r.update(method="retired", impl="retired")
        rehash(r)

    assert read(edited(tmp_path / "a", LAST, gone)).options["init"] == "uniform"
    nested = edited(tmp_path / "b", LAST, lambda r: (gone(r), r["options"].update(init={"a": 1})))
    refused(nested, "'options.init'")


def test_the_trainers_record_is_checked_as_a_whole(tmp_path):
    """bench/run/outputs.py's record passes through the same check: the trainer cannot write a
    contradiction either (here: a history whose epochs are numbered twice)."""
    from bench.record import Record

    data = json.loads(LAST.read_text())
    data["history"][2]["epoch"] = 2
    with pytest.raises(ValueError, match=r"the trainer's record: .*'history\[2\]\.epoch'"):
        Record.from_json(data, "the trainer's record")


def test_a_key_written_twice_is_refused_naming_the_file_and_key(tmp_path):
    path = edited(tmp_path, LAST, lambda r: None)
    text = path.read_text()
    # json keeps the last of two silently: a hand edit appended below the trainer's value
    path.write_text(text.replace('"lr": 0.001,', '"lr": 0.001, "lr": 0.5,', 1))
    assert path.read_text() != text
    message = refused(path, "'lr'")
    assert "written twice" in message


def test_a_record_nested_without_end_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "record.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    message = refused(path, "nested deeper")
    assert "Recursion" not in message


def test_a_record_nested_deeper_than_any_record_is_refused_before_a_reader_recurses(tmp_path):
    deep = 1.0
    for _ in range(900):  # json reads it; dataclasses.asdict in Record.to_json would not
        deep = [deep]
    path = edited(tmp_path, LAST, lambda r: r["provenance"].update(speed={"x": deep}))
    refused(path, "nested deeper than")


def test_a_5000_digit_number_is_refused_naming_the_file(tmp_path):
    path = edited(tmp_path, LAST, lambda r: None)
    path.write_text(path.read_text().replace('"seed": 0', '"seed": ' + "9" * 5000, 1))
    message = refused(path, "not a readable record.json")
    assert "digits" in message
