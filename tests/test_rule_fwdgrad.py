"""fwdgrad computes (grad L . v) v from one forward-mode pass: exact, unbiased, seeded, BatchNorm-safe."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bench.measure import memory
from bench.measure import network as measure
from bench.method import discover
from bench.models import BlockNet, build
from tests.conftest import make


def _rule(seed=7, **options):
    rule = discover()["fwdgrad"](**options)
    rule.generator = torch.Generator().manual_seed(seed)
    return rule


def _bp_gradients(model, x, y):
    """The true gradient of the batch-mean CE (train mode), on a copy: {name: grad}."""
    twin = copy.deepcopy(model)
    twin.zero_grad(set_to_none=True)
    F.cross_entropy(twin(x), y).backward()
    return {n: p.grad.clone() for n, p in twin.named_parameters()}


def _directions(model, seed, count):
    """`count` directions re-drawn the rule's way: per parameter, in order, from a generator seeded `seed`."""
    g = torch.Generator().manual_seed(seed)
    return [
        {n: torch.randn(p.shape, generator=g) for n, p in model.named_parameters()}
        for _ in range(count)
    ]


def _expected(true, directions):
    """mean_k (grad . v_k) v_k, the directional derivative taken from the autograd gradient."""
    out = {n: torch.zeros_like(g) for n, g in true.items()}
    for v in directions:
        slope = sum((true[n].double() * v[n].double()).sum() for n in true)
        for n in out:
            out[n] += (slope * v[n].double()).float() / len(directions)
    return out


def _assert_close(got, expected, name):
    """Equal to float32 rounding, relative to the tensor's largest entry (averaged terms cancel entrywise)."""
    error = (got - expected).abs().max().item()
    assert error <= 2e-5 * expected.abs().max().item() + 1e-8, f"{name}: off by {error:.3g}"


def _model(arch, batchnorm=False, seed=0):
    torch.manual_seed(seed)
    return build(arch, (1, 8, 8), 10, batchnorm=batchnorm)


CASES = [
    ("mlp3", False),
    ("smallconv", False),
    ("smallconv", True),
    ("mlp3", True),
    ("resnet32", False),
    ("mobilenetv1", False),
    ("lenet", False),
    ("vgg13", False),
]


@pytest.mark.parametrize(("arch", "batchnorm"), CASES)
def test_fwdgrad_is_the_directional_derivative_times_the_direction(arch, batchnorm, batch):
    x, y = batch
    model = _model(arch, batchnorm)
    true = _bp_gradients(model, x, y)
    reference = copy.deepcopy(model)
    stats = _rule(seed=7).step(model, x, y)
    expected = _expected(true, _directions(model, 7, 1))
    for name, p in model.named_parameters():
        _assert_close(p.grad, expected[name], name)
    # loss and count come from the same (train-mode) forward.
    logits = reference(x)
    assert stats["loss"].item() == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-5)
    assert stats["correct"].item() == (logits.argmax(1) == y).sum().item()
    assert not stats["loss"].requires_grad


def test_fwdgrad_averages_its_directions(batch):
    x, y = batch
    model = _model("smallconv", batchnorm=True)
    true = _bp_gradients(model, x, y)
    _rule(seed=11, directions=3).step(model, x, y)
    expected = _expected(true, _directions(model, 11, 3))
    for name, p in model.named_parameters():
        _assert_close(p.grad, expected[name], name)
    single = _model("smallconv", batchnorm=True)
    _rule(seed=11).step(single, x, y)
    assert not torch.allclose(single.blocks[0][0].weight.grad, model.blocks[0][0].weight.grad)


def test_fwdgrad_is_unbiased():
    # 226 parameters: the mean of M estimates has cosine about 1 / sqrt(1 + n / M) with the gradient.
    torch.manual_seed(0)
    model = BlockNet(
        [nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.Tanh())], nn.Linear(8, 10), (1, 4, 4)
    )
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(32, 1, 4, 4, generator=g), torch.arange(32) % 10
    true = torch.cat([grad.flatten() for grad in _bp_gradients(model, x, y).values()])
    cosines = {}
    for count in (1, 2000):
        model.zero_grad(set_to_none=True)
        _rule(seed=5, directions=count).step(model, x, y)
        mean = torch.cat([p.grad.flatten() for p in model.parameters()])
        cosines[count] = F.cosine_similarity(mean, true, dim=0).item()
    assert cosines[2000] > 0.9, cosines
    assert cosines[1] < 0.5, (
        cosines
    )  # one direction alone is far off: it is the averaging that converges


@pytest.mark.parametrize("arch", ["smallconv", "resnet32"])
@pytest.mark.parametrize("directions", [1, 3])
def test_fwdgrad_updates_batchnorm_statistics_as_one_forward(arch, directions, batch):
    x, y = batch
    model = _model(arch, batchnorm=True)
    forward = copy.deepcopy(model)
    forward.train()
    with torch.no_grad():
        forward(x)
    before = {n: b.clone() for n, b in model.named_buffers()}
    _rule(directions=directions).step(model, x, y)
    buffers = dict(model.named_buffers())
    assert any("running_mean" in n for n in buffers) and any(
        "num_batches_tracked" in n for n in buffers
    )
    for name, b in forward.named_buffers():
        torch.testing.assert_close(buffers[name], b, rtol=1e-5, atol=1e-6, msg=name)
        assert not torch.equal(buffers[name], before[name]), f"{name} did not move"


def test_fwdgrad_ignores_the_global_rng(batch):
    x, y = batch
    grads = []
    for global_seed in (0, 1):
        model = _model("smallconv")
        torch.manual_seed(global_seed)
        _rule(seed=3).step(model, x, y)
        grads.append([p.grad.clone() for p in model.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*grads))
    model = _model("smallconv")
    _rule(seed=4).step(model, x, y)
    assert not torch.equal(model.blocks[0][0].weight.grad, grads[0][0])


def test_fwdgrad_channels_last_draws_the_same_direction(batch):
    x, y = batch
    model = _model("smallconv", batchnorm=True)
    _rule().step(model, x, y)
    nhwc = _model("smallconv", batchnorm=True).to(memory_format=torch.channels_last)
    _rule().step(nhwc, x.contiguous(memory_format=torch.channels_last), y)
    for (name, p), q in zip(model.named_parameters(), nhwc.parameters()):
        _assert_close(q.grad, p.grad, name)
        assert q.grad.stride() == q.stride(), f"{name}: gradient not in its parameter's layout"


def test_fwdgrad_runs_no_backward(batch):
    x, y = batch
    model = _model("smallconv", batchnorm=True)
    with memory.SavedTensorBytes(model) as counter:
        _rule().step(model, x, y)
    assert counter.bytes == 0  # nothing saved for a backward pass
    model.zero_grad(set_to_none=True)
    with memory.SavedTensorBytes(model) as counter:
        F.cross_entropy(model(x), y).backward()
    assert counter.bytes > 0  # the counter does see a BP step's activations


def test_fwdgrad_under_bf16_autocast_is_still_a_multiple_of_the_direction(batch):
    x, y = batch
    model = _model("smallconv", batchnorm=True)
    with torch.autocast("cpu", torch.bfloat16):
        stats = _rule(seed=2).step(model, x, y)
    v = _directions(model, 2, 1)[0]
    ratios = torch.cat([(p.grad / v[n]).flatten() for n, p in model.named_parameters()])
    assert torch.isfinite(stats["loss"]) and ratios.abs().max() > 0
    torch.testing.assert_close(ratios, ratios[:1].expand_as(ratios), rtol=1e-5, atol=0)


def test_fwdgrad_update_alignment_is_measured_and_signals_are_undefined(batch):
    x, y = batch
    model, rule = make("smallconv", "fwdgrad")
    update = measure.update_alignment(model, rule, x, y)
    assert set(update) >= {"head", "blocks.0.0"} and all(-1 <= c <= 1 for c in update.values())
    assert all(
        c != c for c in measure.alignment_with_bp(model, rule, x, y)
    )  # NaN: no block signals
    with pytest.raises(ValueError, match="directions"):
        make("mlp3", "fwdgrad", directions=0)
