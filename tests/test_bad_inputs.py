"""Bad input to every public entry point gives an ``AdvSpatialError`` naming the argument.

One table: each row is a call with one mistake and the argument name the message must contain. The
error must be the library's (a ``ValueError`` subclass), never a crash inside torch. After the table,
the issue's individual reliability items, each with its own test.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

from advspatial import (
    AdvSpatialError,
    CurriculumSpatial,
    GridSearchRotoTranslation,
    InvarianceRegularizedLoss,
    RotoTranslationBox,
    SpatialPGD,
    WorstOfK,
    forward_matrices,
    roto_translate,
    roto_translate_boxes,
    roto_translate_masks,
    roto_translate_points,
)
from advspatial.curriculum import linf_pgd
from advspatial.errors import MAX_CANDIDATES
from advspatial.space import AffineBox


def _model(channels: int = 1) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(channels, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 10))


MODEL = _model()
OTHER = _model()
X = torch.rand(3, 1, 8, 8)
Y = torch.tensor([1, 2, 3])
P = torch.zeros(3, 3)


def _searches() -> list[tuple[str, Any]]:
    return [
        ("WorstOfK", WorstOfK(MODEL, k=2)),
        ("Grid", GridSearchRotoTranslation(MODEL, rotations=3, translations=1)),
        ("SpatialPGD", SpatialPGD(MODEL, steps=1)),
    ]


# (id, call, argument the message must name)
ROWS: list[tuple[str, Callable[[], object], str]] = [
    # -- constructors ------------------------------------------------------------------------------
    ("WorstOfK model", lambda: WorstOfK("model"), "model"),  # type: ignore[arg-type]
    ("WorstOfK k=0", lambda: WorstOfK(MODEL, k=0), "k"),
    ("WorstOfK k float", lambda: WorstOfK(MODEL, k=2.5), "k"),  # type: ignore[arg-type]
    ("WorstOfK k huge", lambda: WorstOfK(MODEL, k=10**11), "k must be <="),
    ("WorstOfK max_rotation<0", lambda: WorstOfK(MODEL, max_rotation=-1), "max_rotation"),
    ("WorstOfK max_rotation nan", lambda: WorstOfK(MODEL, max_rotation=math.nan), "max_rotation"),
    ("WorstOfK max_translation 3", lambda: WorstOfK(MODEL, max_translation=(1, 2, 3)), "max_translation"),
    ("WorstOfK selection", lambda: WorstOfK(MODEL, selection="min"), "selection"),
    ("WorstOfK generator", lambda: WorstOfK(MODEL, generator="cpu"), "generator"),  # type: ignore[arg-type]
    ("WorstOfK interpolation", lambda: WorstOfK(MODEL, interpolation="cubic"), "interpolation"),
    ("WorstOfK padding", lambda: WorstOfK(MODEL, padding="wrap"), "padding"),
    ("WorstOfK chunk_size", lambda: WorstOfK(MODEL, chunk_size=0), "chunk_size"),
    ("WorstOfK autocast", lambda: WorstOfK(MODEL, autocast=torch.int8), "autocast"),
    ("WorstOfK include_identity", lambda: WorstOfK(MODEL, include_identity=1), "include_identity"),  # type: ignore[arg-type]
    ("Grid rotations=0", lambda: GridSearchRotoTranslation(MODEL, rotations=0), "rotations"),
    ("Grid translations", lambda: GridSearchRotoTranslation(MODEL, translations=(1,)), "translations"),
    (
        "Grid too many points",
        lambda: GridSearchRotoTranslation(MODEL, rotations=10**4, translations=100),
        "rotations x translations",
    ),
    ("Grid early_exit", lambda: GridSearchRotoTranslation(MODEL, early_exit="yes"), "early_exit"),  # type: ignore[arg-type]
    (
        "Grid max_translation<0",
        lambda: GridSearchRotoTranslation(MODEL, max_translation=-1),
        "max_translation",
    ),
    ("SpatialPGD steps<0", lambda: SpatialPGD(MODEL, steps=-1), "steps"),
    ("SpatialPGD step_size<0", lambda: SpatialPGD(MODEL, step_size=-1.0), "step_size"),
    ("SpatialPGD random_start", lambda: SpatialPGD(MODEL, random_start=None), "random_start"),  # type: ignore[arg-type]
    ("SpatialPGD generator", lambda: SpatialPGD(MODEL, generator=1), "generator"),  # type: ignore[arg-type]
    ("SpatialPGD max_rotation inf", lambda: SpatialPGD(MODEL, max_rotation=math.inf), "max_rotation"),
    ("Curriculum model", lambda: CurriculumSpatial(None), "model"),  # type: ignore[arg-type]
    ("Curriculum steps", lambda: CurriculumSpatial(MODEL, steps=-1), "steps"),
    ("Curriculum step_size", lambda: CurriculumSpatial(MODEL, step_size=-0.1), "step_size"),
    ("Curriculum k", lambda: CurriculumSpatial(MODEL, k=0), "k"),
    ("Curriculum clip", lambda: CurriculumSpatial(MODEL, clip=(1.0, 0.0)), "clip"),
    ("Curriculum spatial", lambda: CurriculumSpatial(MODEL, spatial="grid"), "spatial"),
    ("Curriculum adversarial", lambda: CurriculumSpatial(MODEL, adversarial="fgsm"), "adversarial"),
    ("Curriculum generator", lambda: CurriculumSpatial(MODEL, generator="cpu"), "generator"),  # type: ignore[arg-type]
    ("Curriculum max_translation", lambda: CurriculumSpatial(MODEL, max_translation=-2), "max_translation"),
    ("Curriculum random_start", lambda: CurriculumSpatial(MODEL, random_start="no"), "random_start"),  # type: ignore[arg-type]
    ("Loss model", lambda: InvarianceRegularizedLoss("m", WorstOfK(MODEL)), "model"),  # type: ignore[arg-type]
    ("Loss attack", lambda: InvarianceRegularizedLoss(MODEL, object()), "attack"),  # type: ignore[arg-type]
    ("Loss attack.model", lambda: InvarianceRegularizedLoss(MODEL, WorstOfK(OTHER)), "attack.model"),
    (
        "Loss regularizer",
        lambda: InvarianceRegularizedLoss(MODEL, WorstOfK(MODEL), regularizer="l1"),
        "regularizer",
    ),
    ("Loss weight<0", lambda: InvarianceRegularizedLoss(MODEL, WorstOfK(MODEL), weight=-1), "weight"),
    ("Loss weight nan", lambda: InvarianceRegularizedLoss(MODEL, WorstOfK(MODEL), weight=math.nan), "weight"),
    ("Loss task_on", lambda: InvarianceRegularizedLoss(MODEL, WorstOfK(MODEL), task_on="all"), "task_on"),
    (
        "Loss attack_objective",
        lambda: InvarianceRegularizedLoss(MODEL, WorstOfK(MODEL), attack_objective="x"),
        "attack_objective",
    ),
    ("Loss task_loss", lambda: InvarianceRegularizedLoss(MODEL, WorstOfK(MODEL), task_loss=3), "task_loss"),  # type: ignore[arg-type]
    # -- the transform calls -------------------------------------------------------------------------
    ("Curriculum images int", lambda: CurriculumSpatial(MODEL)(X.mul(255).byte(), Y), "images"),
    ("Curriculum labels None", lambda: CurriculumSpatial(MODEL)(X, None), "labels"),  # type: ignore[arg-type]
    ("Curriculum labels shape", lambda: CurriculumSpatial(MODEL)(X, Y[:2]), "labels"),
    ("Curriculum channels", lambda: CurriculumSpatial(MODEL)(torch.rand(3, 3, 8, 8), Y), "images"),
    ("Curriculum labels >= classes", lambda: CurriculumSpatial(MODEL)(X, Y + 10), "labels"),
    ("Loss images empty", lambda: InvarianceRegularizedLoss(MODEL, WorstOfK(MODEL))(X[:0], Y[:0]), "images"),
    ("Loss labels float", lambda: InvarianceRegularizedLoss(MODEL, WorstOfK(MODEL))(X, Y.float()), "labels"),
    (
        "Loss params shape",
        lambda: InvarianceRegularizedLoss(MODEL, WorstOfK(MODEL))(X, Y, params=P[:, :2]),
        "params",
    ),
    (
        "Loss channels",
        lambda: InvarianceRegularizedLoss(MODEL, WorstOfK(MODEL))(torch.rand(3, 3, 8, 8), Y),
        "images",
    ),
    ("linf_pgd eps", lambda: linf_pgd(MODEL, X, Y, eps=-1.0), "eps"),
    ("linf_pgd images", lambda: linf_pgd(MODEL, X[0], Y, eps=0.1), "images"),
    ("linf_pgd channels", lambda: linf_pgd(MODEL, torch.rand(3, 3, 8, 8), Y, eps=0.1), "images"),
    # -- geometry ------------------------------------------------------------------------------------
    ("roto_translate images", lambda: roto_translate(X[0], P[:1]), "images"),
    ("roto_translate images int", lambda: roto_translate(X.byte(), P), "images"),
    ("roto_translate params shape", lambda: roto_translate(X, P[:2]), "params"),
    ("roto_translate params nan", lambda: roto_translate(X, torch.full((3, 3), math.nan)), "params"),
    ("roto_translate params int", lambda: roto_translate(X, P.long()), "params"),
    ("roto_translate interpolation", lambda: roto_translate(X, P, interpolation="cubic"), "interpolation"),  # type: ignore[arg-type]
    ("roto_translate padding", lambda: roto_translate(X, P, padding="wrap"), "padding"),  # type: ignore[arg-type]
    ("roto_translate_masks masks", lambda: roto_translate_masks(torch.zeros(8, 8), P), "masks"),
    ("roto_translate_masks params", lambda: roto_translate_masks(torch.zeros(3, 8, 8), P[:1]), "params"),
    ("roto_translate_boxes boxes", lambda: roto_translate_boxes(torch.zeros(3, 4), P, (8, 8)), "boxes"),
    (
        "roto_translate_boxes canvas",
        lambda: roto_translate_boxes(torch.zeros(3, 1, 4), P, (0, 8)),
        "canvas_size",
    ),
    ("roto_translate_points points", lambda: roto_translate_points(torch.zeros(3, 2), P, (8, 8)), "points"),
    (
        "roto_translate_points params",
        lambda: roto_translate_points(torch.zeros(3, 1, 2), P[:1], (8, 8)),
        "params",
    ),
    ("forward_matrices params", lambda: forward_matrices(torch.zeros(3, 2), (8, 8)), "params"),
    ("forward_matrices canvas", lambda: forward_matrices(P, (8,)), "canvas_size"),  # type: ignore[arg-type]
    # -- the parameter space -------------------------------------------------------------------------
    ("Box max_rotation", lambda: RotoTranslationBox.of(-1, 1), "max_rotation"),
    ("Box max_rotation bool", lambda: RotoTranslationBox.of(True, 1), "max_rotation"),  # type: ignore[arg-type]
    ("Box max_translation", lambda: RotoTranslationBox.of(1, (1, 2, 3)), "max_translation"),
    ("Box max_translation str", lambda: RotoTranslationBox.of(1, "3"), "max_translation"),  # type: ignore[arg-type]
    ("Box grid rotations", lambda: RotoTranslationBox.of(1, 1).grid(0, 3), "rotations"),
    ("Box grid translations", lambda: RotoTranslationBox.of(1, 1).grid(3, "a"), "translations"),  # type: ignore[arg-type]
    ("Box sample shape", lambda: RotoTranslationBox.of(1, 1).sample((-1,)), "shape"),
    ("Box sample generator", lambda: RotoTranslationBox.of(1, 1).sample((2,), generator="cpu"), "generator"),  # type: ignore[arg-type]
    ("AffineBox max_rotation", lambda: AffineBox(max_rotation=-1), "max_rotation"),
    ("AffineBox scale", lambda: AffineBox(scale=(0.0, 1.0)), "scale"),
    ("AffineBox shear", lambda: AffineBox(shear=-1), "shear"),
    ("AffineBox grid steps", lambda: AffineBox().grid((1, 2, 3)), "steps"),
    ("AffineBox sample shape", lambda: AffineBox().sample((-1,)), "shape"),
    ("AffineBox sample generator", lambda: AffineBox().sample((2,), generator="cpu"), "generator"),  # type: ignore[arg-type]
]

# search() and __call__ of each search strategy: the same mistakes for every strategy.
CALL_MISTAKES: list[tuple[str, Callable[[Any], object], str]] = [
    ("images list", lambda f: f(X.tolist(), Y), "images"),
    ("images 3-d", lambda f: f(X[0], Y), "images"),
    ("images int", lambda f: f(X.mul(255).byte(), Y), "images"),
    ("images meta device", lambda f: f(X.to("meta"), Y), "images"),
    ("images channels", lambda f: f(torch.rand(3, 3, 8, 8), Y), "images"),
    ("images too small", lambda f: f(torch.rand(3, 1, 2, 2), Y), "images"),
    ("labels shape", lambda f: f(X, Y[:2]), "labels"),
    ("labels float", lambda f: f(X, Y.float()), "labels"),
    ("labels negative", lambda f: f(X, -Y), "labels"),
    ("labels >= classes", lambda f: f(X, Y + 10), "labels"),
    ("labels list", lambda f: f(X, [1, 2, 3]), "labels"),
]
for _name, _search in _searches():
    for _mistake, _call, _argument in CALL_MISTAKES:
        ROWS.append((f"{_name}.search {_mistake}", lambda s=_search, c=_call: c(s.search), _argument))
        ROWS.append((f"{_name}() {_mistake}", lambda s=_search, c=_call: c(s), _argument))
for _name, _search in _searches():
    if _name != "Grid":
        ROWS.append(
            (f"{_name}.search generator", lambda s=_search: s.search(X, Y, generator="cpu"), "generator")
        )


@pytest.mark.parametrize(("call", "argument"), [row[1:] for row in ROWS], ids=[row[0] for row in ROWS])
def test_bad_input_names_the_argument(call: Callable[[], object], argument: str) -> None:
    with pytest.raises(AdvSpatialError) as caught:
        call()
    assert isinstance(caught.value, ValueError)
    message = str(caught.value)
    assert argument in message, message
    assert "\n" not in message, message


def test_the_table_covers_every_entry_point() -> None:
    assert len(ROWS) >= 140
    names = {row[0].split(" ")[0].split(".")[0] for row in ROWS}
    for entry in (
        "WorstOfK",
        "Grid",
        "SpatialPGD",
        "Curriculum",
        "Loss",
        "roto_translate",
        "forward_matrices",
        "Box",
    ):
        assert entry in names


# -- the individual items ------------------------------------------------------------------


@pytest.mark.parametrize("labelled", [True, False])
def test_spatial_pgd_works_inside_inference_mode(labelled: bool) -> None:
    attack = SpatialPGD(MODEL, steps=3)
    labels = Y if labelled else None
    expected = attack.search(X, labels)
    with torch.inference_mode():
        inside = attack.search(X.clone(), None if labels is None else labels.clone())
    assert torch.equal(inside.params, expected.params)
    assert torch.equal(inside.correct, expected.correct)
    assert not expected.params.eq(0).all()  # the gradient steps moved somewhere


def test_a_huge_k_is_refused_before_anything_is_allocated() -> None:
    with pytest.raises(AdvSpatialError, match=f"k must be <= {MAX_CANDIDATES}"):
        WorstOfK(MODEL, k=10**11)
    with pytest.raises(AdvSpatialError, match="k must be <="):
        CurriculumSpatial(MODEL, spatial="worst_of_k", k=10**11)
    assert WorstOfK(MODEL, k=MAX_CANDIDATES).k == MAX_CANDIDATES


def test_a_channel_mismatch_names_the_batch_not_the_chunk() -> None:
    images = torch.rand(5, 3, 8, 8)
    for search in (WorstOfK(MODEL, k=4, chunk_size=2), GridSearchRotoTranslation(MODEL, chunk_size=7)):
        with pytest.raises(AdvSpatialError) as caught:
            search.search(images, torch.arange(5))
        message = str(caught.value)
        assert "images of shape (5, 3, 8, 8) (a batch of 5)" in message
        assert "expects 1 channel(s), the images have 3" in message
        assert "[2," not in message and "[7," not in message


SEARCHES: list[Callable[[nn.Module], Any]] = [
    lambda m: WorstOfK(m, k=4, generator=torch.Generator().manual_seed(1)),
    lambda m: GridSearchRotoTranslation(m, rotations=5, translations=3),
    lambda m: SpatialPGD(m, steps=2, random_start=True, generator=torch.Generator().manual_seed(1)),
]


@pytest.mark.parametrize("make", SEARCHES, ids=["WorstOfK", "Grid", "SpatialPGD"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_images_of_another_float_dtype_are_scored_in_the_model_dtype(make: Any, dtype: torch.dtype) -> None:
    images = X.to(dtype)
    reference = make(MODEL).search(images.float(), Y)  # the same values, in the model's dtype
    result = make(MODEL).search(images, Y)
    assert torch.equal(result.params, reference.params)
    assert torch.equal(result.correct, reference.correct)
    out = make(MODEL)(images, Y)
    assert out.dtype == dtype and out.shape == images.shape


@pytest.mark.parametrize("dtype", [torch.float16, torch.float64])
def test_the_dtype_rule_holds_for_pgd_curriculum_and_loss(dtype: torch.dtype) -> None:
    images = X.to(dtype)
    assert linf_pgd(MODEL, images, Y, eps=0.1, steps=2).dtype == dtype
    assert CurriculumSpatial(MODEL, generator=torch.Generator().manual_seed(0))(images, Y).dtype == dtype
    loss = InvarianceRegularizedLoss(MODEL, WorstOfK(MODEL, k=2))(images.requires_grad_(True), Y)
    loss.backward()
    assert torch.isfinite(loss) and images.grad is not None and images.grad.dtype == dtype
