"""Reading is light (issue 27): the record, the recipe and every module of the report wing import without
torch, so a report that reads JSON records never pays for the trainer's imports."""

import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import bench.report
from bench import models
from bench.models import archs, init

REPO = Path(__file__).resolve().parent.parent
REPORT = sorted(m.name for m in pkgutil.walk_packages(bench.report.__path__, "bench.report."))
CONFIG = ["bench.config", "bench.config.recipe", "bench.config.spec", "bench.config.names"]
LIGHT = ["bench", "bench.layout", "bench.option", *CONFIG, "bench.record", "bench.measure.declare"]
LIGHT += REPORT


def imported(modules: list[str]) -> set[str]:
    """The top-level packages a fresh interpreter holds after importing `modules` (this checkout's)."""
    code = f"import importlib, sys\nfor m in {modules!r}: importlib.import_module(m)\nprint(*sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert done.returncode == 0, done.stderr
    return {name.split(".")[0] for name in done.stdout.split()}


def test_light_imports_cover_the_report_wing():
    wing = {"bench.report.table", "bench.report.figures", "bench.report.claims.markdown"}
    assert wing | {"bench.report.claims.verdicts"} <= set(REPORT)


def test_light_imports_the_record_and_the_report_wing_without_torch():
    assert "torch" not in imported(LIGHT)


@pytest.mark.parametrize("module", ["bench.models.archs", "bench.measure.robustness"])
def test_light_imports_see_torch_where_it_is_imported(module):
    assert "torch" in imported([module])  # so the test above can fail


def test_light_imports_models_lends_its_torch_names_from_their_files():
    assert models.ARCHS is archs.ARCHS and models.build is archs.build
    assert models.build_for is archs.build_for and models.initialise is init.initialise
    assert models.SCHEMES == tuple(init.DRAWS)  # declared without torch, drawn with it
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        models.nope  # noqa: B018
