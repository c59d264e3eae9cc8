"""Any torchvision network (issue 29 item 3): `tv-<model>`, also spelled `torchvision:<model>`, is torchvision's
model cut into its stages, converted by the layer-swap rules with the record naming the layers, refused
clearly where a rule would train part of it by BP without a word."""

import json
import warnings

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from bench.cli import main
from bench.config import names
from bench.config.files import load_config
from bench.layers import exact_backward
from bench.measure import network
from bench.measure.locality import check_blocks
from bench.method import call_hook, get_method
from bench.models import build, check_arch, zoo

CIFAR = (3, 32, 32)
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(autouse=True)
def one_thread():
    """One thread here: these networks' many small kernels run several times slower on two threads
    that share a busy CPU (the suite's conftest sets two); restored after each test."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def prepared(arch: str, rule: str, in_shape=CIFAR):
    torch.manual_seed(0)
    model = build(arch, in_shape, 10)
    method = get_method(rule)()
    check_blocks(method, model)
    feedback = torch.Generator().manual_seed(1)
    return call_hook(method.prepare, model, 10, feedback, in_shape=in_shape), method


def batch(n=4, in_shape=CIFAR):
    generator = torch.Generator().manual_seed(2)
    return torch.randn((n, *in_shape), generator=generator), torch.arange(n) % 10


def test_one_spelling_for_paths_and_the_alias_everywhere_else(tmp_path):
    assert names.arch_name("torchvision:mobilenet_v2") == "tv-mobilenet_v2"
    assert names.problem("tv-mobilenet_v2") is None  # a run folder, a wildcard, a table row
    assert check_arch("torchvision:resnet18") == check_arch("tv-resnet18") == "tv-resnet18"
    digits = {"archs": ["torchvision:resnet18", "mlp3"], "methods": ["bp"]}
    config = load_config(overrides={"datasets": {"digits": digits}}, check_data=False)
    assert config.grids["digits"].archs == ("tv-resnet18", "mlp3")
    twice = {"archs": ["torchvision:resnet18", "tv-resnet18"], "methods": ["bp"]}
    with pytest.raises(ValueError, match="'tv-resnet18' is listed twice"):
        load_config(overrides={"datasets": {"digits": twice}}, check_data=False)


def test_resnet18_is_torchvisions_network_cut_into_stem_four_stages_and_head():
    torch.manual_seed(0)
    net = build("tv-resnet18", CIFAR, 10)
    torch.manual_seed(0)
    theirs = torchvision.models.get_model("resnet18", weights=None, num_classes=10).eval()
    assert [list(dict(block.named_children())) for block in net.blocks] == [
        ["conv1", "bn1", "relu", "maxpool"],
        ["layer1"],
        ["layer2"],
        ["layer3"],
        ["layer4"],
    ]
    assert list(dict(net.head.named_children())) == ["avgpool", "flatten", "fc"]
    assert net.unstaged is None and net.block_output_shapes()[0] == (64, 8, 8)  # stem unchanged
    x, _ = batch()
    with torch.no_grad():  # the same weights (same seed), the same function
        assert torch.allclose(net.eval()(x), theirs(x), atol=1e-5)


def test_a_cut_that_is_not_the_forward_is_refused(monkeypatch):
    body, head = zoo.STAGES["ResNet"]
    swapped = body[:4] + ("layer2", "layer1") + body[6:]
    monkeypatch.setitem(zoo.STAGES, "ResNet", (swapped, head))
    with pytest.raises(ValueError, match="do not compute ResNet's forward"):
        build("tv-resnet18", CIFAR, 10)


@pytest.mark.parametrize("arch, layers", [("tv-resnet18", 21), ("tv-mobilenet_v2", 53)])
def test_fa_converts_every_conv_and_linear_and_its_step_is_not_bps(arch, layers):
    model, method = prepared(arch, "fa")
    report = network.converted_layers(model)
    assert len(report["converted_layers"]) == layers  # every Conv2d and the fc / classifier
    assert report["unconverted_layers"] and all(
        "BatchNorm2d" in name for name in report["unconverted_layers"]
    )
    x, y = batch()
    model.eval()  # no dropout draw (mobilenet_v2's classifier), so both steps see one function
    method.step(model, x, y)
    fa = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    with exact_backward():
        method.step(model, x, y)
    bp = {n: p.grad for n, p in model.named_parameters()}
    head = [n for n in fa if n.startswith("head.")]
    assert all(torch.equal(fa[n], bp[n]) for n in head)  # the head's own gradient is the true one
    first = report["converted_layers"][0] + ".weight"  # its error came back through the Bs
    assert not torch.allclose(fa[first], bp[first], rtol=1e-3, atol=0)


@pytest.mark.parametrize("arch", ["tv-resnet18", "tv-mobilenet_v2"])
def test_bp_steps_and_converts_nothing(arch):
    model, method = prepared(arch, "bp")
    stats = method.step(model, *batch())
    assert torch.isfinite(stats["loss"])
    assert all(p.grad is not None for p in model.parameters())
    assert network.converted_layers(model) == {"converted_layers": [], "unconverted_layers": None}


def test_dfa_learns_at_resnet18s_stages():
    model, method = prepared("tv-resnet18", "dfa")
    assert len(model.blocks) == 5
    stats = method.step(model, *batch())
    assert torch.isfinite(stats["loss"])
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_a_model_without_known_stages_is_one_block_and_block_rules_refuse_it(monkeypatch):
    monkeypatch.delitem(zoo.STAGES, "MobileNetV2")
    model, method = prepared("tv-mobilenet_v2", "fa")  # one backward through it all: fine
    assert len(model.blocks) == 1 and isinstance(model.head, torch.nn.Sequential)
    method.step(model, *batch())
    with pytest.raises(
        ValueError,
        match="method 'dfa' learns at the network's block outputs, but "
        "torchvision's MobileNetV2 has no top-level stages",
    ):
        prepared("tv-mobilenet_v2", "dfa")


def test_a_layer_without_a_feedback_form_is_refused_naming_it():
    with pytest.raises(ValueError, match=r"cannot give these layers a feedback backward.*CNBlock"):
        prepared("tv-convnext_tiny", "fa")


def test_gray_input_gets_a_first_conv_of_its_channels_and_odd_inputs_are_refused():
    net = build("tv-resnet18", (1, 28, 28), 10)
    assert net.blocks[0].conv1.in_channels == 1
    assert net(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    with pytest.raises(ValueError, match="tv-resnet18: a torchvision model takes images"):
        build("tv-resnet18", (64,), 10)
    with pytest.raises(ValueError, match="tv-alexnet cannot take 3x32x32 images: "):
        build("tv-alexnet", CIFAR, 10)


def test_architecture_buffers_are_not_feedback():
    assert network.param_counts(build("tv-swin_t", CIFAR, 10))["feedback_params"] == 0


def test_an_unknown_torchvision_name_exits_2_naming_the_choices(tmp_path, capsys):
    code = main(
        [
            "train",
            "--dataset",
            "digits",
            "--arch",
            "torchvision:resnet9000",
            "--method",
            "fa",
            "--out",
            str(tmp_path / "run"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "unknown arch 'torchvision:resnet9000'" in err
    assert "it offers: alexnet, " in err and "mobilenet_v2" in err
    assert not (tmp_path / "run").exists()


def test_list_says_how_to_name_them(capsys):
    assert main(["list"]) == 0
    line = next(l for l in capsys.readouterr().out.splitlines() if l.startswith("torchvision"))
    assert "tv-<model> (also torchvision:<model>)" in line and "resnet18" in line


@pytest.mark.parametrize("rule", ["fa", "dfa"])
def test_train_on_an_image_folder_records_the_converted_layers(tmp_path, rule):
    rng = np.random.default_rng(0)
    for split, count in (("train", 4), ("test", 2)):
        for name in ("ant", "bee"):
            (tmp_path / "toy" / split / name).mkdir(parents=True)
            for i in range(count):
                image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                Image.fromarray(image).save(tmp_path / "toy" / split / name / f"{i}.png")
    out = tmp_path / "run"
    sets = ["epochs=1", "batch_size=4", "probe_size=4", "attack_subset=0", "eval_batch_size=4"]
    command = ["train", "--dataset", "toy", "--arch", "torchvision:resnet18", "--method", rule]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = main(
            [*command, "--data-dir", str(tmp_path), "--out", str(out)]
            + [x for s in sets for x in ("--set", s)]
        )
    assert code == 0
    record = json.loads((out / "record.json").read_text())
    assert record["arch"] == "tv-resnet18" and record["blocks"] == 5 and record["epochs"] == 1
    if rule == "dfa":  # its feedback reaches the five stages; no layer has a backward of its own
        assert record["converted_layers"] == [] and record["unconverted_layers"] is None
        return
    converted = record["converted_layers"]
    assert converted[0] == "blocks.0.conv1" and converted[-1] == "head.fc" and len(converted) == 21
    assert "blocks.0.bn1 (BatchNorm2d)" in record["unconverted_layers"]
