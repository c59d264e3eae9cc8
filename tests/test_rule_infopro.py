"""infopro's math (methods/infopro.py): a module's loss is lambda_1 * reconstruction + lambda_2 * its
auxiliary term, with their weights per K; each module's gradient is that of its own loss, nothing crosses
a module boundary; their auxiliary nets and splits; its record."""

import math

import pytest
import torch
import torch.nn.functional as F

import bench.run.train as trainer
from bench.config.files import load_config
from bench.config.spec import make_spec
from bench.local import module_groups, run_module
from bench.models import build
from methods import infopro
from tests.conftest import make


def test_their_weights_go_linearly_from_the_first_local_module_to_the_k_minus_1th():
    resnet32 = infopro.LAMBDAS["resnet32"]
    assert infopro.module_weights(resnet32, 1) == []  # end to end: no local module
    assert infopro.module_weights(resnet32, 2) == [(5, 1)]  # one local module: the first pair
    k16 = infopro.module_weights(resnet32, 16)
    assert len(k16) == 15 and k16[0] == (5, 0.05) and k16[-1] == pytest.approx((0.2, 0.5))
    assert k16[7] == pytest.approx((5 * 0.5 + 0.2 * 0.5, 0.05 * 0.5 + 0.5 * 0.5))  # ratio 7 / 14
    # A K they did not run takes the largest tabled K (from 4) not above it: 3 -> 4's, 12 -> 8's.
    assert infopro.module_weights(resnet32, 3) == [(6, 0), (1, 2)]
    assert (
        infopro.module_weights(resnet32, 12)[0] == (5, 0)
        and len(infopro.module_weights(resnet32, 12)) == 11
    )
    assert infopro.module_weights(infopro.LAMBDAS["resnet110"], 4) == [(1, 0), (0.5, 0.5), (0, 1)]


def test_a_modules_loss_is_the_weighted_sum_of_a_known_reconstruction_and_cross_entropy():
    model, rule = make("mlp3", "infopro", modules=3)  # blocks of 512; local modules 1 and 2
    decoder, aux = model.auxiliary["decoder2"].net, model.auxiliary["aux2"][-1]
    # The decoder's logits: 0.5 everywhere; the classifier's: v for every sample.
    with torch.no_grad():
        decoder.weight.zero_(), decoder.bias.fill_(0.5)
        aux.weight.zero_(), aux.bias.copy_(torch.arange(10.0) / 10)
    # Each image constant; the batch spans -4..4, so the targets are 0.5, 0.75, 1 and 0.
    x = torch.tensor([0.0, 2.0, 4.0, -4.0]).repeat_interleave(64).view(4, 1, 8, 8)
    y = torch.tensor([0, 3, 9, 3])
    loss, terms = rule.module_loss(model, 1, torch.randn(4, 512), y, x)
    # BCE with logit c and target t: log(1 + e^c) - t c, averaged over the entries
    recon = sum(math.log1p(math.exp(0.5)) - t * 0.5 for t in (0.5, 0.75, 1.0, 0.0)) / 4
    lse = math.log(sum(math.exp(i / 10) for i in range(10)))
    ce = sum(lse - int(c) / 10 for c in y) / 4
    lambda_1, lambda_2 = rule.weights[1]
    assert (lambda_1, lambda_2) == (1, 2)  # mlp3: K = 3 takes their K = 4 row (last local module)
    assert loss.item() == pytest.approx(lambda_1 * recon + lambda_2 * ce, rel=1e-6)
    assert terms["recon2"].item() == pytest.approx(recon, rel=1e-6)
    assert terms["ce2"].item() == pytest.approx(ce, rel=1e-6)
    assert rule.module_loss(model, 2, torch.randn(4, 512), y, x) == (None, {})  # the head's module


def test_the_contrastive_term_is_their_supervised_contrast_by_hand():
    s = 1 / math.sqrt(2)  # unit features: samples 0 and 1 of class 0, 2 of class 1
    features, y = torch.tensor([[1.0, 0.0], [s, s], [0.0, 1.0]]), torch.tensor([0, 0, 1])
    dots = [[1, s, 0], [s, 1, s], [0, s, 1]]
    t = 0.07

    def log_prob(i, p):
        return dots[i][p] / t - math.log(sum(math.exp(dots[i][a] / t) for a in range(3) if a != i))

    expected = -(log_prob(0, 1) + log_prob(1, 0) + 0) / 3  # sample 2 has no positive: it counts 0
    assert infopro.sup_contrast(3 * features, y).item() == pytest.approx(expected, rel=1e-5)


def test_the_reconstruction_target_is_x_rescaled_to_0_1_per_channel():
    x = torch.stack([torch.tensor([[-1.0, 3.0]]), torch.tensor([[1.0, 10.0]])]).view(2, 2, 1, 1)
    target = infopro.unit_range(x)  # channel 0: -1..1, channel 1: 3..10
    assert target.flatten().tolist() == pytest.approx([0.0, 0.0, 1.0, 1.0])


def _by_hand(model, rule, index, x, y):
    """The gradient of module `index`'s own loss (its weighted local loss, or the head's CE for the last)
    with respect to its blocks' and its auxiliary nets' parameters, on a graph built here, apart."""
    ranges = rule.module_ranges(model)
    with torch.no_grad():
        h = x
        for blocks in ranges[:index]:
            h = run_module(model, blocks, h)
    out = run_module(model, ranges[index], h)
    if index == len(ranges) - 1:
        tops, loss = [model.head], F.cross_entropy(model.head(out), y)
    else:
        n = index + 1
        tops = [model.auxiliary[f"decoder{n}"], model.auxiliary[f"aux{n}"]]
        recon = F.binary_cross_entropy(torch.sigmoid(tops[0](out)), infopro.unit_range(x))
        lambda_1, lambda_2 = rule.weights[index]
        loss = lambda_1 * recon + lambda_2 * F.cross_entropy(tops[1](out), y)
    params = [p for i in ranges[index] for p in model.blocks[i].parameters()]
    params += [p for top in tops for p in top.parameters()]
    return params, torch.autograd.grad(loss, params)


@pytest.mark.parametrize("arch,modules", [("smallconv", 0), ("smallconv", 2), ("mlp3", 0)])
def test_each_modules_gradient_is_that_of_its_own_weighted_local_loss(arch, modules, batch):
    model, rule = make(arch, "infopro", modules=modules)
    x, y = batch
    state = {k: v.clone() for k, v in model.state_dict().items()}
    stats = rule.step(model, x, y)
    model.load_state_dict(state)  # the hand computation's forward sees the step's BatchNorm inputs
    ranges = rule.module_ranges(model)
    for index in range(len(ranges)):
        params, expected = _by_hand(model, rule, index, x, y)
        for p, g in zip(params, expected):
            assert torch.allclose(p.grad, g, rtol=1e-4, atol=1e-7), f"module {index}"
    local = range(1, len(ranges))
    assert set(stats) == {"loss", "correct"} | {f"{t}{n}" for n in local for t in ("recon", "ce")}


def test_a_modules_update_is_unchanged_when_everything_above_it_is_perturbed(batch):
    model, rule = make("smallconv", "infopro", aux_loss="contrast")
    rule.step(model, *batch)
    first = [p.grad.clone() for p in model.blocks[0].parameters()]
    twin, twin_rule = make("smallconv", "infopro", aux_loss="contrast")
    mine = ("blocks.0.", "auxiliary.decoder1.", "auxiliary.aux1.")
    with torch.no_grad():
        for name, p in twin.named_parameters():
            if not name.startswith(mine):
                p.add_(torch.randn_like(p))
    twin_rule.step(twin, *batch)
    assert all(torch.equal(a, p.grad) for a, p in zip(first, twin.blocks[0].parameters()))
    # Without the cut, module 2's loss would reach module 1: the check above can fail.
    model.zero_grad()
    loss, _ = rule.module_loss(
        model, 1, model.blocks[1](model.blocks[0](batch[0])), *reversed(batch)
    )
    loss.backward()
    assert any(p.grad.abs().sum() > 0 for p in model.blocks[0].parameters())


def test_their_aux_nets_and_resnet32_splits():
    torch.manual_seed(0)
    model = build("resnet32", (3, 8, 8), 10)
    rule = infopro.InfoPro(modules=2)
    model = rule.prepare(model, 10, torch.Generator().manual_seed(0), (3, 8, 8))
    # module 1 ends at block 7 (stage 2, 32 channels): decoder 32->12->3, 1c2f 32->64 (stride 2)->128->10
    decoder = 9 * 32 * 12 + 12 + 2 * 12 + 9 * 12 * 3 + 3
    aux = 9 * 32 * 64 + 2 * 64 + 64 * 128 + 128 + 128 * 10 + 10
    counted = {name: sum(p.numel() for p in m.parameters()) for name, m in model.auxiliary.items()}
    assert counted == {"decoder1": decoder, "aux1": aux}
    # Their networks/configs.py InfoPro['resnet32'], [stage, layer] after which a local module ends
    # (stage 0: the stem), is bench.local.module_groups' split at every K they ran.
    theirs = {
        2: [[2, 1]],
        4: [[1, 2], [2, 1], [3, 0]],
        8: [[1, 0], [1, 2], [1, 4], [2, 1], [2, 3], [3, 0], [3, 2]],
        16: [[0, 0]] + [[s, i] for s in (1, 2) for i in range(5)] + [[3, i] for i in range(4)],
    }
    for k, ends in theirs.items():
        blocks = [0 if s == 0 else 1 + 5 * (s - 1) + i for s, i in ends]
        assert [r[-1] for r in module_groups(model, k)[:-1]] == blocks, k


def _record(method, tmp_path):
    recipe = {"epochs": 1, "batch_size": 64, "probe_size": 32, "device": "cpu", "attack_subset": 0}
    variants = load_config(check_data=False).variants
    return trainer.run(make_spec("digits", "mlp3", method, 0, recipe, variants), tmp_path / method)


def test_an_infopro_record_counts_its_decoders_and_heads_apart_from_bps_network(tmp_path):
    record, bp = _record("infopro", tmp_path), _record("bp", tmp_path)
    assert record.status == "ok" and record.test_acc > 50
    assert record.measures["auxiliary_params"] > 0 and bp.measures["auxiliary_params"] == 0
    assert (record.trainable_params, record.feedback_params) == (
        bp.trainable_params,
        bp.feedback_params,
    )
    assert record.inference_params == bp.inference_params
    assert set(record.history[0].terms) == {"recon1", "ce1", "recon2", "ce2"}
