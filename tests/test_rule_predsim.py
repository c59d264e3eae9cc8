"""predsim's math (methods/predsim.py): the sim loss and the pred loss on hand-made batches, their
weights, their pooling, each module's gradient that of its own loss with nothing crossing a module
boundary, and its record beside BP's."""

import math

import pytest
import torch
import torch.nn.functional as F

import bench.run.train as trainer
from bench.config.files import load_config
from bench.config.spec import make_spec
from bench.local import run_module
from methods.predsim import decoder_pool, sim_loss, similarity
from tests.conftest import make


def _flat_batch(width: int = 512) -> torch.Tensor:
    """Three rows with mean 0: a, 2a (cosine 1) and c, whose cosine with a is -1/2."""
    h = torch.zeros(3, width)
    h[0, :2] = torch.tensor([1.0, -1.0])
    h[1, :2] = torch.tensor([2.0, -2.0])
    h[2, 1:3] = torch.tensor([1.0, -1.0])
    return h


def test_the_sim_loss_of_a_flat_batch_is_the_hand_computed_one():
    # Samples 0 and 1 share a class: their target similarity is 1, every other pair's -1/9 (10 classes),
    # so 4 of the 9 entries differ, each by -1/2 + 1/9 = -7/18: mean 4 (7/18)^2 / 9 = 49/729.
    y = torch.tensor([0, 0, 1])
    assert torch.allclose(similarity(F.one_hot(y, 10).float())[0], torch.tensor([1, 1, -1 / 9]))
    expected = torch.tensor([[1, 1, -0.5], [1, 1, -0.5], [-0.5, -0.5, 1]])
    assert torch.allclose(similarity(_flat_batch()), expected, atol=1e-6)
    assert math.isclose(sim_loss(_flat_batch(), y, 10).item(), 49 / 729, rel_tol=1e-5)
    # Two classes: the target for two classes is -1/(2-1); a, 2a and -a match it, a loss of 0.
    h = _flat_batch()
    h[2] = -h[0]
    assert sim_loss(h, y, 2).item() < 1e-10


def test_a_feature_maps_similarity_is_that_of_its_channels_standard_deviations():
    # Channel values (0, 0, 0, s) over 2 x 2 positions have the unbiased standard deviation s / 2.
    stds = torch.tensor([[1.0, 0, 1, 0], [2, 0, 2, 0], [0, 1, 0, 1]])
    maps = torch.zeros(3, 4, 2, 2)
    maps[..., 1, 1] = 2 * stds
    # Centred: a = (1, -1, 1, -1) / 2, b = 2a, c = -a: cosines 1 and -1; targets as above, 1 and -1/9.
    assert torch.allclose(similarity(maps), similarity(stds), atol=1e-6)
    loss = sim_loss(maps, torch.tensor([0, 0, 1]), 10).item()
    assert math.isclose(loss, 4 * (1 - 1 / 9) ** 2 / 9, rel_tol=1e-5)  # = 256/729
    # Three channels or fewer, or a height of 1: the map is flattened, as their code does.
    assert torch.equal(similarity(maps[:, :3]), similarity(maps[:, :3].flatten(1)))


def test_module_loss_is_the_hand_computed_pred_and_sim_in_their_weights():
    model, rule = make("mlp3", "predsim")
    pred, sim = model.auxiliary.pred1[-1], model.auxiliary.sim1
    assert torch.count_nonzero(pred.weight) == 0  # [code] their classifier starts at zero
    with torch.no_grad():
        sim.weight.copy_(torch.eye(512))  # an identity projection: sim is the flat batch's own
        pred.weight.zero_()
        pred.weight[:3, :3] = 2 * torch.eye(3)
        pred.bias.zero_()
    h, y = _flat_batch(), torch.tensor([0, 0, 1])
    # logits: 2 h[:, :3] on classes 0-2, 0 elsewhere; CE = log sum exp(logits) - logits[y]
    by_hand = [
        math.log(math.exp(2) + math.exp(-2) + 8) - 2,
        math.log(math.exp(4) + math.exp(-4) + 8) - 4,
        math.log(math.exp(2) + math.exp(-2) + 8) - 2,
    ]
    loss, terms = rule.module_loss(model, 0, h, y)
    assert math.isclose(terms["pred1"].item(), sum(by_hand) / 3, rel_tol=1e-5)
    assert math.isclose(terms["sim1"].item(), 49 / 729, rel_tol=1e-5)
    assert math.isclose(loss.item(), 0.01 * sum(by_hand) / 3 + 0.99 * 49 / 729, rel_tol=1e-5)
    rule.beta = 0.25
    loss, _ = rule.module_loss(model, 0, h, y)
    assert math.isclose(loss.item(), 0.75 * sum(by_hand) / 3 + 0.25 * 49 / 729, rel_tol=1e-5)
    assert rule.module_loss(model, 2, h, y) == (None, {})  # the last module: the head's CE


@pytest.mark.parametrize("loss", ["pred", "sim"])
def test_pred_and_sim_alone_build_and_use_only_their_own_auxiliary_nets(loss):
    model, rule = make("smallconv", "predsim", loss=loss)
    assert sorted(model.auxiliary) == [f"{loss}{i}" for i in (1, 2, 3)]
    _, terms = rule.module_loss(model, 0, model.blocks[0](torch.randn(4, 1, 8, 8)), torch.arange(4))
    assert terms.keys() == {f"{loss}1"}


def test_one_module_has_no_auxiliary_nets_and_learns_as_bp(batch):
    model, rule = make("mlp3", "predsim", modules=1)
    bp, bp_rule = make("mlp3", "bp")
    assert "auxiliary" not in model._modules
    assert set(rule.step(model, *batch)) == {"loss", "correct"}
    bp_rule.step(bp, *batch)
    for p, q in zip(model.parameters(), bp.parameters()):
        assert torch.allclose(p.grad, q.grad, rtol=1e-5, atol=1e-7)


def test_pred_pools_feature_maps_to_dim_in_decoder_as_their_code():
    # 16 x 32 x 32 = 16384 > 4096: kernel 2 x 2; 128 x 16 x 16: height 2, width 2, height 4 (4 x 2);
    # 32 x 7 x 7 to 512: kernel 2 x 2 with one zero of padding, ceil(7 / 2) = 4 positions a side.
    for shape, limit, kernel, features in [
        ((16, 32, 32), 4096, (2, 2), 4096),
        ((128, 16, 16), 4096, (4, 2), 4096),
        ((32, 7, 7), 512, (2, 2), 512),
        ((64, 8, 8), 4096, None, 4096),
    ]:
        pool, count = decoder_pool(shape, limit)
        assert count == features
        assert (pool[0].kernel_size if pool else None) == kernel
        out = torch.nn.Sequential(*pool)(torch.ones(2, *shape)).flatten(1)
        assert out.shape == (2, features)
    pool, _ = decoder_pool((32, 7, 7), 512)
    corner = pool[0](torch.ones(1, 32, 7, 7))[0, 0]
    assert corner[0, 0] == 0.25 and corner[1, 1] == 1  # the padding's zeros count in the average


def _by_hand(model, rule, ranges, index, x, y):
    """The gradient of module `index`'s own loss (its predsim loss, or the head's CE for the last
    module) with respect to its blocks' and its auxiliary nets' parameters, on a graph built here."""
    with torch.no_grad():
        h = x
        for blocks in ranges[:index]:
            h = run_module(model, blocks, h)
    out = run_module(model, ranges[index], h)
    params = [p for i in ranges[index] for p in model.blocks[i].parameters()]
    if index == len(ranges) - 1:
        params += list(model.head.parameters())
        return params, torch.autograd.grad(F.cross_entropy(model.head(out), y), params)
    n = index + 1
    params += [*model.auxiliary[f"pred{n}"].parameters(), *model.auxiliary[f"sim{n}"].parameters()]
    pred = F.cross_entropy(model.auxiliary[f"pred{n}"](out), y)
    sim = sim_loss(model.auxiliary[f"sim{n}"](out), y, 10)
    return params, torch.autograd.grad(0.01 * pred + 0.99 * sim, params)


@pytest.mark.parametrize("arch,modules", [("smallconv", 0), ("smallconv", 2), ("mlp3", 0)])
def test_each_modules_gradient_is_that_of_its_own_local_loss(arch, modules, batch):
    model, rule = make(arch, "predsim", modules=modules)
    x, y = batch
    with torch.no_grad():  # non-zero classifiers, so pred reaches the blocks in this one step
        for name, p in model.auxiliary.named_parameters():
            if name.startswith("pred"):
                p.normal_(0, 0.1, generator=torch.Generator().manual_seed(1))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    stats = rule.step(model, x, y)
    ranges = rule.module_ranges(model)
    model.load_state_dict(state)  # the hand computation's forward sees the step's BatchNorm inputs
    for index in range(len(ranges)):
        params, expected = _by_hand(model, rule, ranges, index, x, y)
        for p, g in zip(params, expected):
            assert torch.allclose(p.grad, g, rtol=1e-5, atol=1e-7), f"module {index}"
        assert any(g.abs().sum() > 0 for g in expected[:2]), f"module {index}: no gradient"
    assert math.isclose(stats["loss"].item(), F.cross_entropy(model(x), y).item(), rel_tol=1e-5)
    local = {f"{t}{i + 1}" for i in range(len(ranges) - 1) for t in ("pred", "sim")}
    assert set(stats) == {"loss", "correct"} | local


def test_no_gradient_reaches_a_module_from_the_losses_of_the_modules_above(batch):
    model, rule = make("smallconv", "predsim")
    rule.step(model, *batch)
    first = [p.grad.clone() for p in model.blocks[0].parameters()]
    # Module 2's and 3's auxiliary nets and every block above module 1, changed: module 1's update holds.
    twin, twin_rule = make("smallconv", "predsim")
    with torch.no_grad():
        for name, p in twin.named_parameters():
            if not name.startswith(("blocks.0.", "auxiliary.pred1.", "auxiliary.sim1.")):
                p.add_(torch.randn_like(p))
    twin_rule.step(twin, *batch)
    assert all(torch.equal(a, p.grad) for a, p in zip(first, twin.blocks[0].parameters()))
    # Without the cut module 2's sim loss would reach module 1: the test above can fail.
    model.zero_grad()
    h = model.blocks[1](model.blocks[0](batch[0]))
    sim_loss(model.auxiliary.sim2(h), batch[1], 10).backward()
    assert any(p.grad.abs().sum() > 0 for p in model.blocks[0].parameters())


def _record(method, tmp_path):
    recipe = {"epochs": 1, "batch_size": 64, "probe_size": 32, "device": "cpu", "attack_subset": 0}
    variants = load_config(check_data=False).variants
    return trainer.run(make_spec("digits", "mlp3", method, 0, recipe, variants), tmp_path / method)


def test_a_predsim_record_counts_its_auxiliary_nets_apart_from_bps_network_counts(tmp_path):
    predsim, bp = _record("predsim", tmp_path), _record("bp", tmp_path)
    assert predsim.status == "ok" and predsim.test_acc > 50
    # mlp3's two hidden modules: pred 512 x 10 + 10 and sim 512 x 512 each
    assert predsim.measures["auxiliary_params"] == 2 * (5130 + 512 * 512)
    assert bp.measures["auxiliary_params"] == 0
    assert (predsim.trainable_params, predsim.feedback_params) == (
        bp.trainable_params,
        bp.feedback_params,
    )
    assert predsim.inference_params == bp.inference_params
    assert set(predsim.history[0].terms) == {"pred1", "sim1", "pred2", "sim2"}
