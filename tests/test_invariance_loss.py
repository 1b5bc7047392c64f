"""Unit tests of InvarianceRegularizedLoss and its regularizers (Yang et al. 2019)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advspatial import (
    AdvSpatialError,
    GridSearchRotoTranslation,
    InvarianceRegularizedLoss,
    SpatialPGD,
    WorstOfK,
    roto_translate,
)
from advspatial.losses import PAPER_WEIGHTS, logit_kl_divergence, logit_squared_distance


def linear_model(seed: int = 0, size: int = 6, classes: int = 5) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(size * size, classes))


def bn_model(seed: int = 0, dtype: torch.dtype = torch.float32) -> nn.Module:
    """Conv-BN-tanh-pool-linear: 35 parameters, smooth (for gradcheck), 4 classes."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=1),
        nn.BatchNorm2d(2),
        nn.Tanh(),
        nn.AvgPool2d(3),
        nn.Flatten(),
        nn.Linear(2 * 2 * 2, 3),
    ).to(dtype)


def batch(seed: int = 0, size: int = 6, n: int = 4, classes: int = 5) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 1, size, size, generator=generator)
    labels = torch.randint(0, classes, (n,), generator=generator)
    return images, labels


def fixed_params(n: int = 4) -> Tensor:
    return torch.tensor([[20.0, 1.0, -1.0], [-30.0, 0.5, 2.0], [5.0, -3.0, 0.0], [0.0, 0.0, 0.0]])[:n]


def hand_kl(clean: Tensor, adv: Tensor) -> Tensor:
    p = torch.softmax(clean.double(), dim=1)
    q = torch.softmax(adv.double(), dim=1)
    return (p * (p.log() - q.log())).sum(dim=1)


# --- regularizers ---------------------------------------------------------------------------------


def test_squared_distance_matches_hand_value() -> None:
    clean = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    adv = torch.tensor([[1.0, 0.0, 4.0], [2.0, -2.0, 1.0]])
    # (0 + 4 + 1) / 4 and (4 + 4 + 1) / 4
    assert torch.equal(logit_squared_distance(clean, adv), torch.tensor([1.25, 2.25]))


def test_kl_matches_torch_distributions() -> None:
    generator = torch.Generator().manual_seed(0)
    clean, adv = torch.randn(2, 16, 7, generator=generator).unbind(0)
    expected = torch.distributions.kl_divergence(
        torch.distributions.Categorical(logits=clean), torch.distributions.Categorical(logits=adv)
    )
    torch.testing.assert_close(logit_kl_divergence(clean, adv), expected, rtol=1e-5, atol=1e-6)
    assert torch.equal(logit_kl_divergence(clean, clean), torch.zeros(16))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_regularizers_finite_and_float32_for_half_logits(dtype: torch.dtype) -> None:
    # exp(-80) underflows to zero in half precision; the penalties are computed in float32.
    clean = torch.tensor([[40.0, -40.0, 0.0]], dtype=dtype)
    adv = torch.tensor([[-40.0, 40.0, 0.0]], dtype=dtype)
    kl, l2 = logit_kl_divergence(clean, adv), logit_squared_distance(clean, adv)
    assert kl.dtype == torch.float32
    assert l2.dtype == torch.float32
    torch.testing.assert_close(kl.double(), hand_kl(clean, adv), rtol=1e-5, atol=0.0)
    assert float(l2) == (80.0**2 + 80.0**2) / 4
    huge = torch.tensor([[60000.0, -60000.0, 0.0]], dtype=dtype)
    assert bool(torch.isfinite(logit_kl_divergence(huge, huge.flip(1))).all())
    assert bool(torch.isfinite(logit_squared_distance(huge, huge.flip(1))).all())


# --- the value ------------------------------------------------------------------------------------


@pytest.mark.parametrize("regularizer", ["kl", "l2"])
@pytest.mark.parametrize("task_on", ["nat", "adv", "both"])
def test_value_equals_hand_computation(regularizer: str, task_on: str) -> None:
    model = linear_model()
    images, labels = batch()
    params = fixed_params()
    loss_fn = InvarianceRegularizedLoss(
        model, WorstOfK(model), regularizer=regularizer, weight=0.7, task_on=task_on
    )
    loss = loss_fn(images, labels, params=params)

    with torch.no_grad():
        clean = model(images).double()
        adv = model(roto_translate(images, params)).double()
    ce_nat, ce_adv = F.cross_entropy(clean, labels), F.cross_entropy(adv, labels)
    task = {"nat": ce_nat, "adv": ce_adv, "both": (ce_nat + ce_adv) / 2}[task_on]
    if regularizer == "kl":
        penalty = hand_kl(clean, adv).mean()
    else:
        penalty = ((clean - adv) ** 2).sum(dim=1).mean() / 4
    torch.testing.assert_close(loss.double(), task + 0.7 * penalty, rtol=1e-5, atol=1e-6)
    last = loss_fn.last
    assert last is not None
    torch.testing.assert_close(last.task.double(), task, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(last.regularizer.double(), penalty, rtol=1e-5, atol=1e-6)
    assert last.weight == 0.7
    assert last.search is None
    assert torch.equal(last.params, params)
    wrong = (adv.argmax(dim=1) != labels).float().mean()
    assert float(last.attack_success_rate) == float(wrong)
    assert penalty > 0  # the oracle is not vacuous


def test_default_weights_are_the_papers() -> None:
    model = linear_model()
    assert InvarianceRegularizedLoss(model, WorstOfK(model), regularizer="kl").weight == 8.0
    assert InvarianceRegularizedLoss(model, WorstOfK(model), regularizer="l2").weight == 1.0
    assert PAPER_WEIGHTS == {"kl": 8.0, "l2": 1.0}


@pytest.mark.parametrize("regularizer", ["kl", "l2"])
def test_weight_zero_equals_plain_task_loss(regularizer: str) -> None:
    model = linear_model()
    images, labels = batch()
    attack = WorstOfK(model, k=10, generator=torch.Generator().manual_seed(3))
    nat = InvarianceRegularizedLoss(model, attack, regularizer=regularizer, weight=0.0, task_on="nat")
    loss = nat(images, labels)
    loss.backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    plain = F.cross_entropy(model(images), labels)
    plain.backward()
    torch.testing.assert_close(loss, plain, rtol=1e-6, atol=1e-7)
    for grad, param in zip(grads, model.parameters(), strict=True):
        torch.testing.assert_close(grad, param.grad, rtol=1e-6, atol=1e-7)
    assert nat.last is not None
    assert float(nat.last.regularizer) > 0

    adv = InvarianceRegularizedLoss(model, attack, regularizer=regularizer, weight=0.0, task_on="adv")
    loss = adv(images, labels)
    assert adv.last is not None
    chosen = adv.last.params
    plain_adv = F.cross_entropy(model(roto_translate(images, chosen)), labels)
    torch.testing.assert_close(loss, plain_adv, rtol=1e-6, atol=1e-7)


def test_task_search_uses_the_attacks_choice() -> None:
    model = linear_model()
    images, labels = batch()
    loss_fn = InvarianceRegularizedLoss(
        model, WorstOfK(model, k=10, generator=torch.Generator().manual_seed(5)), task_on="adv"
    )
    loss_fn(images, labels)
    reference = WorstOfK(model, k=10, generator=torch.Generator().manual_seed(5)).search(images, labels)
    assert loss_fn.last is not None
    assert loss_fn.last.search is not None
    assert torch.equal(loss_fn.last.params, reference.params)
    assert torch.equal(loss_fn.last.search.loss, reference.loss)


def test_custom_task_loss_is_used() -> None:
    model = linear_model()
    images, labels = batch()
    smoothed = InvarianceRegularizedLoss(
        model,
        WorstOfK(model),
        weight=0.0,
        task_loss=lambda logits, y: F.cross_entropy(logits, y, label_smoothing=0.2),
    )
    loss = smoothed(images, labels, params=fixed_params())
    torch.testing.assert_close(loss, F.cross_entropy(model(images), labels, label_smoothing=0.2))


# --- gradients ------------------------------------------------------------------------------------


@pytest.mark.parametrize("regularizer", ["kl", "l2"])
@pytest.mark.parametrize("task_on", ["nat", "adv"])
def test_gradcheck_float64_through_both_terms(regularizer: str, task_on: str) -> None:
    model = bn_model(dtype=torch.float64).train()
    images, labels = batch(n=3, classes=3)
    images = images.double()
    params = fixed_params(3).double()
    loss_fn = InvarianceRegularizedLoss(model, WorstOfK(model), regularizer=regularizer, task_on=task_on)
    names = ["model." + name for name, _ in model.named_parameters()]
    inputs = tuple(p.detach().clone().requires_grad_(True) for p in model.parameters())

    def loss_of(weight: float) -> object:
        def f(*tensors: Tensor) -> Tensor:
            loss_fn.weight = weight
            return torch.func.functional_call(
                _LossCall(model, loss_fn), dict(zip(names, tensors, strict=True)), (images, labels, params)
            )

        return f

    assert torch.autograd.gradcheck(loss_of(2.0), inputs, eps=1e-6, atol=1e-6, rtol=1e-4)
    # Both terms reach the parameters: the regularizer's gradient and the task's gradient are non-zero.
    task_grads = torch.autograd.grad(loss_of(0.0)(*inputs), inputs)
    full_grads = torch.autograd.grad(loss_of(1.0)(*inputs), inputs)
    reg_grads = [full - task for full, task in zip(full_grads, task_grads, strict=True)]
    assert all(float(g.abs().sum()) > 0 for g in task_grads[-2:])
    # (the output bias cancels in both penalties, so check the weights)
    assert float(reg_grads[-2].abs().sum()) > 0
    assert float(reg_grads[0].abs().sum()) > 0  # down to the first convolution
    assert len(inputs) == 6


class _LossCall(nn.Module):
    """Makes the loss callable by ``torch.func.functional_call`` with the model's parameter names."""

    def __init__(self, model: nn.Module, loss_fn: InvarianceRegularizedLoss) -> None:
        super().__init__()
        self.model = model
        self.loss_call = (loss_fn,)

    def forward(self, images: Tensor, labels: Tensor, params: Tensor) -> Tensor:
        return self.loss_call[0](images, labels, params=params)


# --- the model's state ----------------------------------------------------------------------------


def test_one_training_forward_over_clean_and_adversarial_batch() -> None:
    model = bn_model().train()
    model[1].momentum = 0.5
    twin = bn_model().train()
    twin.load_state_dict(model.state_dict())
    twin[1].momentum = 0.5
    images, labels = batch(classes=3)
    calls: list[tuple[bool, int]] = []
    model.register_forward_hook(lambda module, args, out: calls.append((module.training, args[0].shape[0])))
    attack = WorstOfK(model, k=6, generator=torch.Generator().manual_seed(0))
    loss_fn = InvarianceRegularizedLoss(model, attack, regularizer="kl")
    loss = loss_fn(images, labels)
    assert loss_fn.last is not None
    # The attack's scoring ran in eval mode; exactly one forward in training mode, over 2B images.
    assert [c for c in calls if c[0]] == [(True, 8)]
    assert all(not training for training, _ in calls[:-1])
    # The BatchNorm statistics saw the clean and transformed images together, and nothing else.
    adv = roto_translate(images, loss_fn.last.params)
    expected = twin(torch.cat([images, adv]))
    torch.testing.assert_close(model[1].running_mean, twin[1].running_mean)
    torch.testing.assert_close(model[1].running_var, twin[1].running_var)
    assert int(model[1].num_batches_tracked) == 1
    clean, transformed = expected[:4], expected[4:]
    torch.testing.assert_close(
        loss, F.cross_entropy(clean, labels) + 8 * logit_kl_divergence(clean, transformed).mean()
    )


@pytest.mark.parametrize("attack_objective", ["task", "regularizer"])
def test_search_leaves_model_untouched(attack_objective: str) -> None:
    model = bn_model()
    model.train()
    model[1].eval()  # mixed flags must come back as they were
    flags = [m.training for m in model.modules()]
    for p in model.parameters():
        p.grad = torch.full_like(p, 0.25)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    images, labels = batch(classes=3)
    loss_fn = InvarianceRegularizedLoss(model, WorstOfK(model), attack_objective=attack_objective)
    loss_fn._search(images, labels)
    assert [m.training for m in model.modules()] == flags
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in weights.items())
    assert all(torch.equal(p.grad, torch.full_like(p, 0.25)) for p in model.parameters())
    loss_fn(images, labels)  # the training forward itself does not touch .grad either
    assert [m.training for m in model.modules()] == flags
    assert all(torch.equal(p.grad, torch.full_like(p, 0.25)) for p in model.parameters())


def test_model_is_not_a_submodule() -> None:
    model = linear_model()
    loss_fn = InvarianceRegularizedLoss(model, WorstOfK(model))
    assert loss_fn.model is model
    assert loss_fn.state_dict() == {}
    assert list(loss_fn.parameters()) == []
    text = repr(loss_fn)
    assert "regularizer='kl'" in text
    assert "weight=8.0" in text
    assert "WorstOfK" in text


# --- choosing x' with respect to the regularizer --------------------------------------------------


@pytest.mark.parametrize("regularizer", ["kl", "l2"])
def test_regularizer_objective_ranks_candidates_by_the_penalty(regularizer: str) -> None:
    model = bn_model().train()
    images, labels = batch(classes=3)
    candidates = WorstOfK(model, k=7, generator=torch.Generator().manual_seed(1)).sample(4, images.device)
    penalty = logit_kl_divergence if regularizer == "kl" else logit_squared_distance
    model.eval()
    with torch.no_grad():  # brute-force oracle in eval mode, one candidate at a time
        clean = model(images)
        logits = torch.stack([model(roto_translate(images, candidates[:, j])) for j in range(7)], dim=1)
        expected = torch.stack([penalty(clean, logits[:, j]) for j in range(7)], dim=1)
    model.train()
    attack = WorstOfK(model, k=7, selection="max_loss", generator=torch.Generator().manual_seed(1))
    loss_fn = InvarianceRegularizedLoss(
        model, attack, regularizer=regularizer, attack_objective="regularizer"
    )
    loss_fn(images, labels)
    result = loss_fn.last.search if loss_fn.last is not None else None
    assert result is not None
    assert result.candidate_losses is not None
    torch.testing.assert_close(result.candidate_losses, expected, rtol=1e-4, atol=1e-5)
    assert torch.equal(result.candidate_correct, logits.argmax(dim=2) == labels[:, None])
    best = expected.argmax(dim=1)
    assert torch.equal(result.params, candidates[torch.arange(4), best])
    assert result.evaluations == 4 * 7 + 4  # the clean pass is counted


def test_regularizer_objective_with_grid() -> None:
    model = bn_model()
    images, labels = batch(classes=3)
    grid = GridSearchRotoTranslation(model, rotations=5, translations=3)
    loss_fn = InvarianceRegularizedLoss(model, grid, regularizer="l2", attack_objective="regularizer")
    loss_fn(images, labels)
    assert loss_fn.last is not None
    assert loss_fn.last.search is not None
    assert loss_fn.last.search.candidate_losses.shape == (4, 45)
    assert bool(grid.box.contains(loss_fn.last.params).all())


def test_kl_regularizer_objective_with_first_order_attack() -> None:
    model = bn_model()
    images, labels = batch(classes=3)
    # Searched without labels: the attack ascends KL(p_clean || p'), i.e. the regularizer itself.
    reference = SpatialPGD(model, steps=3).search(images, None)
    attack = SpatialPGD(model, steps=3)
    loss_fn = InvarianceRegularizedLoss(model, attack, regularizer="kl", attack_objective="regularizer")
    loss_fn(images, labels)
    assert loss_fn.last is not None
    torch.testing.assert_close(loss_fn.last.params, reference.params)
    with pytest.raises(AdvSpatialError, match="candidate set"):
        InvarianceRegularizedLoss(model, attack, regularizer="l2", attack_objective="regularizer")


def test_task_objective_with_first_order_attack_and_custom_attack() -> None:
    model = bn_model()
    images, labels = batch(classes=3)
    loss_fn = InvarianceRegularizedLoss(model, SpatialPGD(model, steps=2), regularizer="l2")
    assert bool(torch.isfinite(loss_fn(images, labels)))

    class FixedAttack:
        calls = 0

        def search(self, images: Tensor, labels: Tensor | None = None) -> object:
            FixedAttack.calls += 1
            return type("Result", (), {"params": fixed_params(images.shape[0])})()

    custom = InvarianceRegularizedLoss(model, FixedAttack(), regularizer="l2")
    value = custom(images, labels)
    replay = custom(images, labels, params=fixed_params())
    assert FixedAttack.calls == 1  # given params skip the search
    assert torch.equal(value, replay)


# --- validation -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"regularizer": "l1"}, "regularizer must be one of 'kl', 'l2', got 'l1'"),
        ({"weight": -1.0}, "weight must be >= 0, got -1.0"),
        ({"weight": float("nan")}, "weight must be a finite number"),
        ({"weight": True}, "weight must be a finite number"),
        ({"weight": "8"}, "weight must be a finite number"),
        ({"task_on": "rob"}, "task_on must be one of 'nat', 'adv', 'both', got 'rob'"),
        ({"attack_objective": "loss"}, "attack_objective must be one of 'task', 'regularizer'"),
        ({"task_loss": 3}, "task_loss must be callable"),
    ],
)
def test_bad_configuration_raises(kwargs: dict[str, object], match: str) -> None:
    model = linear_model()
    with pytest.raises(AdvSpatialError, match=match):
        InvarianceRegularizedLoss(model, WorstOfK(model), **kwargs)  # type: ignore[arg-type]


def test_bad_attack_or_model_raises() -> None:
    model = linear_model()
    with pytest.raises(AdvSpatialError, match="attack must have a search"):
        InvarianceRegularizedLoss(model, object())  # type: ignore[arg-type]
    with pytest.raises(AdvSpatialError, match=r"attack\.model must be the model being trained"):
        InvarianceRegularizedLoss(model, WorstOfK(linear_model(1)))
    with pytest.raises(AdvSpatialError, match=r"model must be a torch\.nn\.Module"):
        InvarianceRegularizedLoss("net", WorstOfK(model))  # type: ignore[arg-type]


def test_bad_inputs_raise() -> None:
    model = linear_model()
    loss_fn = InvarianceRegularizedLoss(model, WorstOfK(model))
    images, labels = batch()
    with pytest.raises(AdvSpatialError, match=r"labels must have shape \(4,\)"):
        loss_fn(images, labels[:3])
    with pytest.raises(AdvSpatialError, match="at least one image"):
        loss_fn(images[:0], labels[:0])
    with pytest.raises(AdvSpatialError, match=r"params must have shape \(4, 3\)"):
        loss_fn(images, labels, params=torch.zeros(4, 2))
    with pytest.raises(AdvSpatialError, match="labels must be < the model's number of classes"):
        loss_fn(images, labels + 5, params=fixed_params())
    with pytest.raises(AdvSpatialError, match=r"images must have shape \(B, C, H, W\)"):
        loss_fn(images[0], labels)
