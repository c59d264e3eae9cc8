"""The local-loss family's published figures (issue 28, item 4): config/published.csv's new columns
(modules K, epochs, provenance, quoted_in) checked naming line and column, files without them still read,
and a table row shows only the figures of its optimizer and of its K."""

import json

import pytest
from synthetic_records import write_record

from bench.layout import PUBLISHED
from bench.report.published import read
from bench.report.table import aggregate

HEADER = "dataset,arch,method,metric,value,source,optimizer,modules,epochs,provenance,quoted_in\n"
GOOD = "toy,mlp,dgl,top1_error,20,Paper 2020,sgd,4,300,primary,\n"
ARCHS, RULES = ("mlp3x3000", "vgg8b", "vgg11b"), ("bp", "pred", "sim", "predsim")


def test_the_committed_file_holds_predsim_and_infopro_with_their_recipe_and_provenance():
    rows = read(PUBLISHED)
    assert {row["provenance"] for row in rows} == {"primary"}  # every row says where it was read
    local = [r for r in rows if "anokland/local-loss" in r["source"]]
    cells = {(r["dataset"], r["arch"], r["method"]) for r in local}
    assert len(local) == 24 and cells == {
        (d, a, m) for d in ("cifar10", "cifar100") for a in ARCHS for m in RULES
    }
    assert {(r["optimizer"], r["epochs"], r["modules"], r["metric"]) for r in local} == {
        ("adam", 400, None, "top1_error")
    }
    assert all("accuracy = 100 - error" in r["source"] for r in local)
    value = {(r["dataset"], r["arch"], r["method"]): r["value"] for r in local}
    assert value["cifar10", "vgg8b", "predsim"] == 5.58 and value["cifar10", "vgg8b", "bp"] == 5.99
    assert (
        value["cifar100", "vgg11b", "predsim"] == 24.05
        and value["cifar100", "mlp3x3000", "bp"] == 62.57
    )
    infopro = [r for r in rows if r["method"] == "infopro"]
    assert {(r["dataset"], r["modules"], r["epochs"], r["optimizer"]) for r in infopro} == {
        ("imagenet", 2, 90, "sgd")
    }
    assert sorted(r["arch"] for r in infopro) == ["resnet101", "resnet152", "resnext101_32x8d"]


@pytest.mark.parametrize(
    "text,message",
    [
        (GOOD.replace("primary", "tertiary"), r"line 2: bad value 'tertiary' for 'provenance'"),
        (GOOD.replace("primary", ""), r"line 2: bad value '' for 'provenance'.*primary"),
        (GOOD.replace(",300,", ",-3,"), r"line 2: bad value '-3' for 'epochs'.*positive integer"),
        (GOOD.replace(",300,", ",300.5,"), r"line 2: bad value '300.5' for 'epochs'"),
        (GOOD.replace(",300,", ",0,"), r"line 2: bad value '0' for 'epochs'"),
        (GOOD.replace(",4,", ",four,"), r"line 2: bad value 'four' for 'modules'"),
        (GOOD.replace(",4,", ",0,"), r"line 2: bad value '0' for 'modules'"),
        (
            GOOD.replace("primary,", "secondary,"),
            r"line 2: no 'quoted_in' for the secondary figure",
        ),
        (
            GOOD.replace("primary,", "primary,Later 2024"),
            r"'Later 2024' for 'quoted_in'.*secondary",
        ),
        (GOOD + GOOD.replace(",20,", ",21,"), r"line 3: the figure of line 2 again.*modules"),
    ],
    ids=[
        "provenance",
        "no_provenance",
        "epochs_negative",
        "epochs_fraction",
        "epochs_zero",
        "modules_text",
        "modules_zero",
        "secondary_unquoted",
        "primary_quoted",
        "same_k_twice",
    ],
)
def test_a_bad_new_column_is_refused_naming_file_line_and_column(tmp_path, text, message):
    path = tmp_path / "published.csv"
    path.write_text(HEADER + text)
    with pytest.raises(ValueError, match=message) as error:
        read(path)
    assert str(path) in str(error.value)


def test_a_file_without_the_new_columns_still_reads_and_one_figure_at_two_k_is_two(tmp_path):
    old = tmp_path / "old.csv"
    old.write_text(
        "dataset,arch,method,metric,value,source,optimizer\ntoy,mlp,bp,test_acc,90,P,sgd\n"
    )
    (row,) = read(old)
    assert (row["modules"], row["epochs"], row["provenance"], row["quoted_in"]) == (
        None,
        None,
        "",
        "",
    )
    new = tmp_path / "new.csv"
    secondary = "toy,mlp,dgl,top1_error,30,Paper 2020,sgd,16,,secondary,Later 2024\n"
    new.write_text(HEADER + GOOD + GOOD.replace(",4,", ",2,") + secondary)
    assert [(r["modules"], r["quoted_in"]) for r in read(new)] == [
        (4, ""),
        (2, ""),
        (16, "Later 2024"),
    ]


def _run(runs, method, *, optimizer, dataset="toy", arch="mlp", modules=None, blocks=None):
    record = write_record(runs, arch, method, 0, 50.0, dataset=dataset)
    record["recipe"]["optimizer"] = optimizer
    if modules is not None:
        record["options"]["modules"] = modules
    if blocks is not None:
        record["blocks"] = blocks  # synthetic records align 2 blocks
    folder = runs / dataset / arch / method / "seed0"
    (folder / "record.json").write_text(json.dumps(record))


def test_a_table_of_dgl_and_predsim_rows_shows_the_figures_of_their_optimizer_and_k(tmp_path):
    path = tmp_path / "published.csv"
    path.write_text(
        HEADER
        + "toy,mlp,predsim,top1_error,10,Local 2019,adam,,400,primary,\n"
        + "toy,mlp,predsim,top1_error,12,Other 2020,sgd,,,primary,\n"
        + "toy,mlp,dgl,top1_error,20,DGL 2020,sgd,2,,primary,\n"
        + "toy,mlp,dgl,top1_error,25,DGL 2020,sgd,4,,primary,\n"
        + "toy,mlp,dgl,top1_error,40,DGL 2020,sgd,16,,secondary,Later 2024\n"
    )
    runs = tmp_path / "runs"
    _run(runs, "predsim", optimizer="adam")
    _run(runs, "dgl", optimizer="sgd", modules=2)  # the rule's own name, K from its option
    _run(runs, "dgl-k4", optimizer="sgd", modules=4)  # a variant of the K axis
    _run(runs, "dgl-k16", optimizer="sgd", modules=4)  # named K = 16 but ran 4: not like for like
    _run(runs, "dgl-k2", optimizer="adam", modules=2)  # K agrees, the optimizer does not
    table = aggregate(runs, "toy", published_path=path).set_index("method")["published"]
    assert table["predsim"] == "90.00 [Local 2019]"
    assert table["dgl"] == "80.00 K=2 [DGL 2020]"
    assert table["dgl-k4"] == "75.00 K=4 [DGL 2020]"
    assert table["dgl-k16"] == "" and table["dgl-k2"] == ""


def test_a_run_without_a_modules_option_has_one_module_per_block(tmp_path):
    path = tmp_path / "published.csv"
    path.write_text(HEADER + GOOD.replace(",4,", ",2,") + GOOD)
    runs = tmp_path / "runs"
    _run(runs, "dgl", optimizer="sgd", blocks=2)
    assert list(aggregate(runs, "toy", published_path=path)["published"]) == [
        "80.00 K=2 [Paper 2020]"
    ]


def test_the_committed_figures_stand_beside_like_runs_only(tmp_path):
    runs = tmp_path / "runs"
    _run(runs, "predsim", optimizer="adam", dataset="cifar10", arch="vgg8b")
    _run(runs, "bp", optimizer="adamw", dataset="cifar10", arch="vgg8b")  # the suite's AdamW: none
    _run(runs, "infopro-k2", optimizer="sgd", dataset="imagenet", arch="resnet101", modules=2)
    _run(runs, "infopro", optimizer="sgd", dataset="imagenet", arch="resnet152", modules=4)
    cifar = aggregate(runs, "cifar10").set_index("method")["published"]
    assert cifar["predsim"].startswith("94.42 [Nøkland & Eidnes 2019") and cifar["bp"] == ""
    imagenet = aggregate(runs, "imagenet").set_index("arch")["published"]
    assert imagenet["resnet101"].startswith("78.15 K=2 [InfoPro (Wang et al. 2021")
    assert imagenet["resnet152"] == ""  # InfoPro's K = 2 figure is not beside a run of 4 modules
