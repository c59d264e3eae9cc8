"""Declared measures (bench/measure/declare.py): one generic contract over every declared measure, dead
units on networks whose dead units are known, the record's checks of declared values, and a measure added
as one new file reaching the record, the table and `bench list` with nothing else edited."""

import csv
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from bench.cli import main
from bench.config.spec import make_spec
from bench.measure import declare
from bench.measure.dead_units import dead_fraction
from bench.models import build
from bench.models.blocknet import BlockNet
from bench.record import Record
from bench.report.table import aggregate
from bench.run.train import run

ROOT = Path(__file__).resolve().parent.parent
RECIPE = {"epochs": 2, "batch_size": 128, "probe_size": 32, "attack_subset": 0, "device": "cpu"}
DECLARED = sorted(declare.declared())


def test_dead_units_is_declared_and_the_declarations_import_no_torch():
    assert "dead_units" in DECLARED
    code = (
        "import sys; from bench.measure import declare; import bench.record, bench.report.table; "
        "assert declare.declared(); assert 'torch' not in sys.modules, 'torch imported'"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("name", DECLARED)
@pytest.mark.parametrize("arch, in_shape", [("mlp3", (1, 8, 8)), ("smallconv", (3, 16, 16))])
def test_every_declared_measure_keeps_its_declaration(name, arch, in_shape):
    measure = declare.declared()[name]
    assert measure.name == name and measure.when in declare.WHEN and measure.shape in declare.SHAPES
    assert measure.doc and measure.low <= measure.high
    model = build(arch, in_shape, 10)
    model.train()
    x, y = torch.randn(16, *in_shape), torch.randint(0, 10, (16,))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    value = declare.value(measure, model, x, y)
    assert measure.accepts(value), (name, value)
    if measure.shape == "per_block":
        assert len(value) == len(model.blocks)
    assert model.training  # its training mode put back
    after = model.state_dict()  # eval mode: batch norm's running statistics untouched
    assert all(torch.equal(before[k], after[k]) for k in before)


def _net(bias: float, units: int = 8) -> BlockNet:
    layer = nn.Linear(4, units)
    with torch.no_grad():
        layer.weight.zero_()
        layer.bias.copy_(torch.tensor([bias if i < units // 2 else 1.0 for i in range(units)]))
    return BlockNet([nn.Sequential(layer, nn.ReLU())], nn.Linear(units, 2), (4,))


@pytest.mark.parametrize("bias, dead", [(-1.0, 0.5), (1.0, 0.0)])
def test_dead_units_counts_the_units_no_image_activates(bias, dead):
    assert dead_fraction(_net(bias), torch.randn(32, 4), None) == [dead]


def test_a_unit_active_on_one_image_is_alive():
    net = BlockNet([nn.ReLU()], nn.Linear(3, 2), (3,))
    x = torch.tensor([[-1.0, -1.0, -1.0], [-1.0, 2.0, -1.0]])
    assert dead_fraction(net, x, None) == [pytest.approx(2 / 3)]


def test_a_count_is_recorded_as_an_integer():
    measure = declare.Measure("n", "end", "number", 0, 1e9, lambda m, x, y: 1592340, "n")
    value = declare.value(measure, nn.Linear(1, 1), None, None)
    assert value == 1592340 and isinstance(value, int)


def test_a_nan_value_is_recorded_as_null():
    measure = declare.Measure(
        "x", "epoch", "per_block", 0, 1, lambda m, x, y: [float("nan"), 0.5], "x"
    )
    assert declare.value(measure, nn.Linear(1, 1), None, None) == [None, 0.5]


@pytest.fixture(scope="module")
def dfa_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("declared") / "runs" / "digits" / "mlp3" / "dfa" / "seed0"
    record = run(make_spec("digits", "mlp3", "dfa", 0, RECIPE, {}), out)
    return out, record


def test_a_run_records_logs_and_tabulates_dead_units(dfa_run):
    out, record = dfa_run
    for epoch in record.history:
        assert len(epoch.measures["dead_units"]) == record.blocks == 3
    rows = list(csv.DictReader((out / "log.csv").open()))
    assert [float(r["dead_units_block2"]) for r in rows] == [
        e.measures["dead_units"][1] for e in record.history
    ]
    table = aggregate(out.parents[3], "digits", [("mlp3", "dfa", 0)])
    last = record.history[-1].measures["dead_units"]
    assert table["dead_units"][0] == pytest.approx(sum(last) / len(last))


def _edited(record: Record, **history_measures) -> dict:
    data = record.to_json()
    data["history"][-1]["measures"] = history_measures
    return data


@pytest.mark.parametrize(
    "measures, problem",
    [
        ({"dead_unit": [0.1, 0.1, 0.1]}, "'history[1].measures.dead_unit'"),  # no such measure
        ({"dead_units": [0.1, 1.5, 0.1]}, "from 0 to 1"),  # out of range
        ({"dead_units": 0.1}, "a list, per block"),  # a number for a per-block measure
        ({"dead_units": [0.1, True, 0.1]}, "a list, per block"),  # true is no number
        ({"dead_units": [0.1, 0.1]}, "one value per block (3 blocks)"),  # a block short
    ],
)
def test_a_declared_value_the_declaration_refuses_is_refused(dfa_run, measures, problem):
    with pytest.raises(ValueError, match="dead_unit") as error:
        Record.from_json(_edited(dfa_run[1], **measures), "r.json")
    assert problem in str(error.value) and "r.json" in str(error.value)


def test_a_record_before_the_measure_still_reads_and_its_table_has_no_such_column(
    dfa_run, tmp_path
):
    out, record = dfa_run
    data = record.to_json()
    for entry in data["history"]:
        del entry["measures"]
    del data["measures"]
    folder = tmp_path / "digits" / "mlp3" / "dfa" / "seed0"
    folder.mkdir(parents=True)
    (folder / "record.json").write_text(json.dumps(data))
    table = aggregate(tmp_path, "digits", [("mlp3", "dfa", 0)], out_dir=tmp_path / "paper")
    assert "dead_units" not in table.columns
    assert "dead units" not in (tmp_path / "paper" / "digits_table.md").read_text()


PROBE_MEAN = '''
"""A test's measure: the mean of the probe batch's labels (no torch import here)."""
from bench.measure.declare import Measure

MEASURE = Measure(name="label_mean", when="end", shape="number", low=0, high=9,
                  compute=lambda model, x, y: y.float().mean().item(), doc="mean probe label",
                  column="label mean", digits=2)
'''


def test_a_measure_in_one_new_file_reaches_record_table_and_list(tmp_path, monkeypatch, capsys):
    package = tmp_path / "extra_measures"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "label_mean.py").write_text(textwrap.dedent(PROBE_MEAN))
    (package / "helper.py").write_text("import torch\n")  # declares nothing: never imported
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(declare, "SOURCES", [*declare.SOURCES, (package, "extra_measures")])
    declare.declared.cache_clear()
    try:
        out = tmp_path / "runs" / "digits" / "mlp3" / "bp" / "seed0"
        record = run(make_spec("digits", "mlp3", "bp", 0, {**RECIPE, "epochs": 1}, {}), out)
        assert 0 <= record.measures["label_mean"] <= 9
        table = aggregate(tmp_path / "runs", "digits", [("mlp3", "bp", 0)], out_dir=tmp_path / "p")
        assert table["label_mean"][0] == record.measures["label_mean"]
        assert "| label mean |" in (tmp_path / "p" / "digits_table.md").read_text()
        assert "extra_measures.helper" not in sys.modules  # read, not run
        assert main(["list"]) == 0
        assert "label_mean: mean probe label  [end" in capsys.readouterr().out
    finally:
        declare.declared.cache_clear()
