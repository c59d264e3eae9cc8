"""The rule contract (bench.Method's docstring), checked on every discovered method file with no test
written for it, and on a copy of methods/template_rule.py trained as a user's new rule would be."""

import math
import shutil

import pytest
import torch

import bench.run.train as trainer
from bench.config.files import load_config
from bench.config.spec import make_spec
from bench.layers import feedback_tensors
from bench.layers.feedback import FeedbackLayer
from bench.layout import REPO
from bench.local import auxiliary_parameters
from bench.measure.locality import Locality
from bench.measure.network import network_parameters, param_counts
from bench.method import call_hook, discover
from bench.models import ARCHS, build
from bench.run.layer_options import network_layers
from tests.conftest import make, run_killed_in_epoch_2

RULES = sorted(discover())
RECORD_KEYS = {
    "schema_version",
    "dataset",
    "arch",
    "method",
    "impl",
    "seed",
    "recipe",
    "options",
    "status",
    "epochs",
    "test_acc",
    "best_test_acc",
    "train_time_s",
    "images_per_s",
    "trainable_params",
    "feedback_params",
    "inference_params",
    "memory",
    "history",
    "provenance",
    "ece",
    "per_class_acc",
    "eval_time_s",
    "robustness",
}
EPOCH_KEYS = {
    "epoch",
    "train_loss",
    "train_acc",
    "test_acc",
    "lr",
    "terms",
    "alignment",
    "update_alignment",
    "ranks",
    "weight_alignment",
}
TIMINGS = {
    "train_time_s",
    "images_per_s",
    "eval_time_s",
    "time_s",
    "started",
    "peak",
    "peak_memory",
}


def _spec(method, seed=0):
    recipe = {"epochs": 2, "batch_size": 64, "probe_size": 64, "device": "cpu"}
    return make_spec("digits", "mlp3", method, seed, recipe, load_config(check_data=False).variants)


def _strip(obj):
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k not in TIMINGS}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    if isinstance(obj, float) and math.isnan(obj):
        return "nan"  # NaN != NaN: compare undefined alignments as equal
    return obj


def _in_range_or_nan(value) -> bool:
    return value is None or math.isnan(value) or -1.0 <= value <= 1.0


@pytest.fixture(scope="module", params=RULES)
def trained(request, tmp_path_factory):
    """(rule, its 2-epoch digits record, a second record of the same seed, the run folder)."""
    out = tmp_path_factory.mktemp(request.param)
    first = trainer.run(_spec(request.param), out / "first").to_json()
    again = trainer.run(_spec(request.param), out / "again").to_json()
    return request.param, first, again, out


def test_rule_trains_two_epochs_into_a_complete_record(trained):
    rule, record, _, _ = trained
    assert RECORD_KEYS <= set(record), f"{rule}: record lacks {RECORD_KEYS - set(record)}"
    assert record["status"] == "ok" and record["epochs"] == 2, rule
    assert [h["epoch"] for h in record["history"]] == [1, 2]
    for entry in record["history"]:
        assert EPOCH_KEYS <= set(entry), f"{rule}: history lacks {EPOCH_KEYS - set(entry)}"
        assert math.isfinite(entry["train_loss"]), rule
        assert len(entry["alignment"]) == 3 and all(map(_in_range_or_nan, entry["alignment"])), rule
        assert entry["update_alignment"] and all(
            map(_in_range_or_nan, entry["update_alignment"].values())
        ), rule
    # the trainable count is the network's; feedback is counted apart, and its bytes are in memory
    assert record["memory"]["feedback"] == 4 * record["feedback_params"], rule
    # so are auxiliary modules (0 for a rule without any): params, gradients, at least one moment
    auxiliary = sum(p.numel() for _, p in auxiliary_parameters(make("mlp3", rule)[0]))
    assert record["measures"]["auxiliary_params"] == auxiliary, rule
    assert 12 * auxiliary <= record["memory"]["auxiliary"] <= 16 * auxiliary + 4096, rule
    assert (record["memory"]["auxiliary"] == 0) == (auxiliary == 0), rule  # bp, dfa: exactly 0


def test_auxiliary_modules_are_trained_checkpointed_and_never_the_networks(trained):
    rule, record, _, out = trained
    fresh = make("mlp3", rule)[0]
    auxiliary = dict(auxiliary_parameters(fresh))
    if not auxiliary:
        pytest.skip(f"{rule} registers no auxiliary module")
    network = sum(p.numel() for _, p in network_parameters(fresh) if p.requires_grad)
    assert record["trainable_params"] == record["inference_params"] == network, rule
    assert not any("auxiliary" in layer for layer in record["history"][-1]["update_alignment"])
    checkpoint = torch.load(out / "first" / "checkpoint.pt", weights_only=True)
    saved = checkpoint["model"]
    assert set(auxiliary) <= set(saved), f"{rule}: auxiliary modules missing from the checkpoint"
    optimized = [i for group in checkpoint["optimizer"]["param_groups"] for i in group["params"]]
    assert len(optimized) == len(list(fresh.parameters())), f"{rule}: the optimizer misses some"
    assert all(
        group["weight_decay"] == record["recipe"]["weight_decay"]
        for group in checkpoint["optimizer"]["param_groups"]
    )
    moved = [n for n, p in auxiliary.items() if not torch.equal(saved[n], p.detach())]
    assert len(moved) == len(auxiliary), (
        f"{rule}: untrained auxiliary parameters {set(auxiliary) - set(moved)}"
    )


def test_every_rule_is_measured_for_robustness_and_weight_alignment(trained):
    rule, record, _, _ = trained
    robustness = record[
        "robustness"
    ]  # the attacks run on every rule's network, with its true gradient
    assert set(robustness["pgd"]) == set(robustness["fgsm"]) == {"1", "2", "4", "8"}, rule
    assert all(0 <= acc <= robustness["clean_acc"] + 1e-9 for acc in robustness["pgd"].values()), (
        rule
    )
    assert robustness["clean_acc"] == pytest.approx(record["test_acc"]), (
        rule
    )  # digits: the whole test split
    angles = record["history"][-1]["weight_alignment"]
    swapped = any(isinstance(m, FeedbackLayer) for m in make("mlp3", rule)[0].modules())
    assert (angles is not None) == swapped, (
        f"{rule}: weight alignment defined iff the rule has per-layer feedback"
    )
    if angles:
        assert all(0 <= a <= 180 for a in angles["angle_deg"].values()) and set(
            angles["norm_ratio"]
        ) == set(angles["angle_deg"]), rule


def test_same_seed_gives_the_same_record(trained):
    rule, record, again, _ = trained
    assert _strip(again) == _strip(record), f"{rule}: two runs of one seed differ"


def test_resume_after_an_interruption_equals_the_uninterrupted_run(trained, monkeypatch):
    rule, record, _, out = trained
    run_killed_in_epoch_2(monkeypatch, _spec(rule), out / "resumed")
    resumed = trainer.run(_spec(rule), out / "resumed").to_json()
    assert _strip(resumed) == _strip(record), (
        f"{rule}: the resumed run differs from the uninterrupted one"
    )


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("arch", ["mlp3", "smallconv"])
def test_step_fills_a_finite_gradient_for_every_trainable_parameter(rule, arch, batch):
    model, method = make(arch, rule)
    stats = method.step(model, *batch)
    assert {"loss", "correct"} <= set(stats) and all(
        torch.is_tensor(v) and v.dim() == 0 for v in stats.values()
    )
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, f"{rule}/{arch}: no gradient for {name}"
            assert torch.isfinite(p.grad).all(), f"{rule}/{arch}: non-finite gradient for {name}"


@pytest.mark.parametrize("rule", RULES)
def test_feedback_is_never_counted_as_trainable(rule):
    model, _ = make("smallconv", rule)
    feedback = feedback_tensors(model)
    network = dict(network_parameters(model))
    assert not set(feedback) & set(network), (
        f"{rule}: {set(feedback) & set(network)} counted as network parameters"
    )
    counts = param_counts(model)
    assert counts["trainable_params"] == sum(p.numel() for p in network.values() if p.requires_grad)
    assert counts["feedback_params"] == sum(t.numel() for t in feedback.values())
    assert all(not isinstance(t, torch.nn.Parameter) or t.requires_grad for t in feedback.values())


@pytest.mark.parametrize("rule", RULES)
def test_step_draws_only_from_the_rules_generator(rule, batch):
    grads = []
    for global_seed in (1, 2):
        model, method = make("mlp3", rule)
        method.generator.manual_seed(7)
        torch.manual_seed(
            global_seed
        )  # a rule that used the global RNG would differ between the two
        method.step(model, *batch)
        grads.append([p.grad.clone() for p in model.parameters() if p.grad is not None])
    assert all(torch.equal(a, b) for a, b in zip(*grads)), f"{rule}: step depends on the global RNG"


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_an_unprepared_network_has_no_feedback(arch):
    # feedback_tensors counts every buffer that is no normalisation statistic: an arch must have none.
    model = build(arch, (3, 32, 32), 10)
    assert feedback_tensors(model) == {}, f"{arch} has buffers that would be counted as feedback"


def test_a_copy_of_the_template_trains_as_a_new_rule(tmp_path, monkeypatch):
    methods = tmp_path / "methods"
    shutil.copytree(REPO / "methods", methods, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(methods / "template_rule.py", methods / "noisy_bp.py")
    monkeypatch.setenv("BENCH_METHODS_DIR", str(methods))
    assert "noisy_bp" in discover() and "template_rule" not in discover()
    record = trainer.run(_spec("noisy_bp"), tmp_path / "run").to_json()
    assert record["status"] == "ok" and record["test_acc"] > 50
    assert record["feedback_params"] == 10  # its per-class buffer, registered in model.feedback
    layers = record["history"][-1]["update_alignment"]
    assert all(0 < v < 1 for v in layers.values())  # noisy BP: aligned with BP, not equal to it
    # Its private state (the annealing step count) goes through the checkpoint: a resumed run is the same.
    run_killed_in_epoch_2(monkeypatch, _spec("noisy_bp"), tmp_path / "resumed")
    assert (
        torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=True)["method_state"][
            "steps"
        ]
        > 0
    )
    assert _strip(trainer.run(_spec("noisy_bp"), tmp_path / "resumed").to_json()) == _strip(record)


@pytest.mark.parametrize("rule", RULES)
def test_update_alignment_covers_every_layer_with_trainable_network_parameters(rule, batch):
    from bench.measure.network import update_alignment

    model, method = make("smallconv", rule)
    network = {id(p) for _, p in network_parameters(model) if p.requires_grad}
    owners = {
        name
        for name, module in model.named_modules()
        if any(id(p) in network for p in module.parameters(recurse=False))
    }
    alignment = update_alignment(model, method, *batch)
    assert set(alignment) == owners, f"{rule}: update alignment misses {owners - set(alignment)}"
    assert all(map(_in_range_or_nan, alignment.values()))


@pytest.mark.parametrize("rule", RULES)
def test_no_tensor_hides_outside_parameters_and_buffers(rule):
    # A tensor kept as a plain attribute is neither counted as feedback, nor moved by .to(), nor checkpointed.
    model, method = make("smallconv", rule)
    for name, module in model.named_modules():
        loose = [k for k, v in vars(module).items() if torch.is_tensor(v)]
        assert not loose, f"{rule}: module {name or 'model'} keeps tensor attribute(s) {loose}"
    loose = [k for k, v in vars(method).items() if torch.is_tensor(v)]
    assert not loose, (
        f"{rule}: the method keeps tensor attribute(s) {loose}; register them on the model"
    )


@pytest.mark.parametrize("rule", RULES)
def test_the_bp_reference_of_a_prepared_network_is_true_backpropagation(rule, batch):
    from bench.layers import exact_backward

    torch.manual_seed(0)
    twin = build("smallconv", (1, 8, 8), 10)  # the same init as make() draws
    model, _ = make("smallconv", rule)
    torch.nn.functional.cross_entropy(twin(batch[0]), batch[1]).backward()
    with exact_backward():
        torch.nn.functional.cross_entropy(model(batch[0]), batch[1]).backward()
    shared = {n: p for n, p in model.named_parameters() if n in dict(twin.named_parameters())}
    for (
        name,
        p,
    ) in shared.items():  # layers a rule factorised (ssa, svd_bp) have other names: not compared
        assert torch.allclose(p.grad, dict(twin.named_parameters())[name].grad, atol=1e-6), (
            f"{rule}: {name}"
        )


@pytest.mark.parametrize("rule", RULES)
def test_every_rule_documents_what_it_computes(rule):
    # The class docstring is what `bench list` shows; one placed after an attribute is no docstring.
    doc = discover()[rule].__doc__
    assert doc and doc.strip(), f"{rule}: its class has no docstring (is it below an attribute?)"


@pytest.mark.parametrize("rule", RULES)
def test_every_rule_declares_what_it_needs(rule):
    # A rule author must say: weight transport, broadcast, locking, auxiliary nets (docs/methods.md,
    # "Locality audit"); tests/test_locality.py then checks the locking it declares.
    declared = discover()[rule].locality
    assert isinstance(declared, Locality), (
        f"{rule}: its class declares no locality ({declared!r}); add one line such as "
        "`locality = Locality(transport='none', broadcast=True, locking='update', auxiliary=False)` "
        "(bench/measure/locality.py says what each fact means)"
    )


@pytest.mark.parametrize("rule", RULES)
def test_every_rule_says_truly_whether_it_keeps_the_networks_layers(rule):
    """`keeps_layers` (bench.Method) decides whether the layer options are refused at the config check:
    after `prepare`, every Conv2d and Linear the network had is still one exactly when a rule says so."""
    torch.manual_seed(0)
    model = build("smallconv", (1, 8, 8), 10)
    names = network_layers(model)
    method = discover()[rule]()
    model = call_hook(
        method.prepare, model, 10, torch.Generator().manual_seed(0), in_shape=(1, 8, 8)
    )
    modules = dict(model.named_modules())
    kept = all(isinstance(modules.get(name), (torch.nn.Conv2d, torch.nn.Linear)) for name in names)
    assert kept == type(method).keeps_layers, (
        f"{rule}: keeps_layers = {type(method).keeps_layers}, but its prepare "
        f"{'keeps' if kept else 'replaces'} the network's Conv2d and Linear layers"
    )
