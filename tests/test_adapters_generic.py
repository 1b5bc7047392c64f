"""The host libraries' own generic transform checks, written for the adapters (issue 14).

Each section is this project's version of the checks a library runs over all of its transforms:
torchvision's ``check_transform`` family (``test/test_transforms_v2.py``), albumentations' tests over
every ``DualTransform`` (``tests/test_augmentations.py``, ``test_serialization.py``, ``test_core.py``)
and kornia's augmentation ``CommonTests`` (``tests/augmentation/test_augmentation.py``). They run on the
installed versions and over every search strategy (:data:`adapter_helpers.SEARCHES`). Where a generic
check cannot apply as written, because the transform needs a model and a label to choose its
parameters, the test says so and checks what holds instead.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import albumentations as A
import kornia.augmentation as K
import numpy as np
import PIL.Image
import pytest
import torch
from kornia.geometry import create_meshgrid
from kornia.geometry.linalg import transform_points
from torch import Tensor
from torch.utils._pytree import tree_flatten
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from adapter_helpers import SEARCHES, any_shape_model, assert_same_state, grid_search, model_state
from advspatial import AdvSpatialError, roto_translate, roto_translate_masks
from advspatial.adapters import SpatialSearchAlbumentations, SpatialSearchKornia, SpatialSearchV2
from advspatial.adapters.kornia import kornia_matrices

SIZE = (10, 13)  # odd and even, not square: catches swapped axes
NAMES = list(SEARCHES)


def _search(name: str) -> Any:
    return SEARCHES[name](any_shape_model())


# --------------------------------------------------------------------------------------------------
# torchvision: check_transform (pickle, output type, the big sample in dict / list / tuple containers)
# --------------------------------------------------------------------------------------------------


def _v2_input(kind: str) -> Any:
    g = torch.Generator().manual_seed(0)
    floats = torch.rand(3, *SIZE, generator=g)
    uint8 = F.to_dtype(floats, torch.uint8, scale=True)
    return {
        "pure_tensor": floats,
        "uint8_tensor": uint8,
        "image": tv_tensors.Image(floats),
        "pil": F.to_pil_image(uint8),
        "batch": torch.rand(4, 3, *SIZE, generator=g),
        "empty_batch": torch.rand(0, 3, *SIZE),
    }[kind]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("kind", ["pure_tensor", "uint8_tensor", "image", "pil", "batch", "empty_batch"])
def test_v2_check_transform(name: str, kind: str) -> None:
    """torchvision's ``check_transform``: pickles, keeps the input's type (and dtype, shape), and leaves
    the input and the model as they were. Scored without labels (``labels_getter=None``): a lone image
    carries none."""
    search = _search(name)
    transform = SpatialSearchV2(search, labels_getter=None)
    restored = pickle.loads(pickle.dumps(transform))
    assert isinstance(restored, SpatialSearchV2) and restored.state_dict() == {}
    inpt = _v2_input(kind)
    kept = inpt.copy() if isinstance(inpt, PIL.Image.Image) else inpt.clone()
    before = model_state(search.model)
    output = transform(inpt)
    assert_same_state(search.model, before)
    assert type(output) is type(inpt)
    if isinstance(inpt, Tensor):
        assert (output.dtype, output.shape, output.device) == (inpt.dtype, inpt.shape, inpt.device)
        assert torch.equal(inpt, kept)
        rows = transform.last_result.params  # type: ignore[union-attr]
        stacked = inpt if inpt.ndim == 4 else inpt[None]
        floats = stacked if stacked.is_floating_point() else stacked.float() / 255
        expected = roto_translate(floats, rows)
        if not stacked.is_floating_point():
            expected = F.to_dtype(expected, stacked.dtype, scale=True)
        assert torch.equal(output.as_subclass(Tensor), expected if inpt.ndim == 4 else expected[0])
    else:
        assert output.size == inpt.size and output.mode == inpt.mode
        assert np.array_equal(np.asarray(inpt), np.asarray(kept))


def _v2_sample() -> dict[str, Any]:
    """torchvision's ``_make_transform_sample`` without its ``Video`` item: the adapter refuses videos
    (a search scores images; frames of one video would each need their own choice), see below."""
    g = torch.Generator().manual_seed(1)
    canvas = {"canvas_size": SIZE}
    boxes = torch.tensor([[1.0, 2.0, 7.0, 8.0], [3.0, 1.0, 12.0, 5.0]])
    degenerate = torch.tensor(
        [[0, 0, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0], [2, 0, 1, 1], [0, 2, 1, 1], [2, 2, 1, 1]]
    )
    return {
        "image_or_video": torch.rand(3, *SIZE, generator=g),
        "image_tv_tensor": tv_tensors.Image(torch.rand(3, *SIZE, generator=g)),
        "image_pil": F.to_pil_image(torch.randint(0, 256, (3, *SIZE), dtype=torch.uint8, generator=g)),
        "bounding_boxes_xyxy": tv_tensors.BoundingBoxes(boxes, format="XYXY", **canvas),
        "bounding_boxes_xywh": F.convert_bounding_box_format(
            tv_tensors.BoundingBoxes(boxes, format="XYXY", **canvas), new_format="XYWH"
        ),
        "bounding_boxes_cxcywh": F.convert_bounding_box_format(
            tv_tensors.BoundingBoxes(boxes, format="XYXY", **canvas), new_format="CXCYWH"
        ),
        "bounding_boxes_degenerate_xyxy": tv_tensors.BoundingBoxes(degenerate, format="XYXY", **canvas),
        "keypoints": tv_tensors.KeyPoints(torch.rand(4, 2, generator=g) * 9, **canvas),
        "detection_mask": tv_tensors.Mask(torch.randint(0, 2, (2, *SIZE), dtype=torch.bool, generator=g)),
        "segmentation_mask": tv_tensors.Mask(torch.randint(0, 5, SIZE, dtype=torch.uint8, generator=g)),
        "int": 0,
        "float": 0.0,
        "bool": True,
        "none": None,
        "str": "str",
        "path": Path("."),
        "object": object(),
        "tensor": torch.empty(5),
        "array": np.empty(5),
    }


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("container", [dict, list, tuple])
def test_v2_sample_input_smoke(name: str, container: type) -> None:
    """``_check_transform_sample_input_smoke``: the output has the input's structure, every item v2
    transforms keeps its type, every other item is passed through as the same object; and (beyond
    torchvision's check) every image-like item moved with the rows the search chose for the first."""
    transform = SpatialSearchV2(_search(name), labels_getter=None)  # the generic sample has no label
    sample = _v2_sample()
    inpt = sample if container is dict else container(sample.values())
    flat, spec = tree_flatten(inpt)
    output = transform(inpt)
    flat_out, spec_out = tree_flatten(output)
    assert spec_out == spec
    needs = v2.Transform()._needs_transform_list(flat)
    for out_item, in_item, transformed in zip(flat_out, flat, needs, strict=True):
        if transformed:
            assert type(out_item) is type(in_item)
        else:
            assert out_item is in_item
    # The pure tensor ``image_or_video`` passes through (the sample has explicit images), so the search
    # scores the first explicit one and the PIL image and the mask move with its rows.
    assert flat_out[0] is flat[0]
    rows = transform.last_result.params  # type: ignore[union-attr]
    image = sample["image_tv_tensor"].as_subclass(Tensor)
    assert torch.equal(flat_out[1].as_subclass(Tensor), roto_translate(image[None], rows)[0])
    pil = F.pil_to_tensor(sample["image_pil"])[None].float() / 255
    expected_pil = F.to_dtype(roto_translate(pil, rows), torch.uint8, scale=True)[0]
    assert torch.equal(F.pil_to_tensor(flat_out[2]), expected_pil)
    mask = sample["segmentation_mask"].as_subclass(Tensor)
    moved_mask = flat_out[list(sample).index("segmentation_mask")].as_subclass(Tensor)
    assert torch.equal(moved_mask, roto_translate_masks(mask[None], rows)[0])


def test_v2_refuses_what_it_cannot_move() -> None:
    """Where check_transform feeds inputs the adapter cannot handle, it refuses clearly: a Video (one
    search per frame would be needed) and a sample without an image (nothing to score)."""
    transform = SpatialSearchV2(_search("grid"), labels_getter=None)
    with pytest.raises(AdvSpatialError, match="does not support Video"):
        transform({"image": torch.rand(3, *SIZE), "video": tv_tensors.Video(torch.rand(2, 3, *SIZE))})
    boxes = tv_tensors.BoundingBoxes(torch.tensor([[1.0, 2.0, 5.0, 6.0]]), format="XYXY", canvas_size=SIZE)
    with pytest.raises(AdvSpatialError, match="found no image"):
        transform(boxes)


@pytest.mark.parametrize("name", NAMES)
def test_v2_containers_reuse_the_transform(name: str) -> None:
    """``Compose``, ``RandomApply`` (p = 0 passes through untouched) and ``RandomChoice`` call it as a v2
    transform; a batch equals the same search looped over its samples when the search is per-image
    deterministic (the grid and PGD without random start; the random ones draw differently per call)."""
    search = _search(name)
    images = torch.rand(3, 3, *SIZE, generator=torch.Generator().manual_seed(2))
    labels = torch.tensor([0, 1, 2])
    transform = SpatialSearchV2(search)
    for container in (
        v2.Compose([transform]),
        v2.RandomApply([transform], p=1.0),
        v2.RandomChoice([transform]),
    ):
        out, out_labels = container(images, labels)
        assert out_labels is labels
        assert torch.equal(out, roto_translate(images, transform.last_result.params))  # type: ignore[union-attr]
    skipped = v2.RandomApply([transform], p=0.0)(images, labels)
    assert skipped[0] is images
    if name in ("grid", "spatial_pgd"):
        looped = torch.stack([transform(images[i], int(labels[i]))[0] for i in range(3)])
        torch.testing.assert_close(looped, transform(images, labels)[0], atol=1e-6, rtol=0)


# --------------------------------------------------------------------------------------------------
# albumentations: the checks run over every DualTransform
# --------------------------------------------------------------------------------------------------


def _albu_image(shape: tuple[int, ...], dtype: type, seed: int = 0) -> np.ndarray:
    floats = np.random.default_rng(seed).random(shape)
    return (floats * 255).astype(np.uint8) if dtype == np.uint8 else floats.astype(dtype)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
@pytest.mark.parametrize("channels", [None, 1, 3, 6])
def test_albu_dual_transform_contracts(name: str, dtype: type, channels: int | None) -> None:
    """``test_dual_augmentations(_with_float_values)``, ``test_augmentations_wont_change_input``,
    ``..._wont_change_shape_grayscale / _rgb`` and ``test_multichannel_image_augmentations``: dtypes and
    shapes kept for grayscale, 1, 3 and 6 channels, inputs untouched; plus the model's state kept and a
    non-contiguous image (``test_non_contiguous_input``) accepted."""
    search = _search(name)
    shape = SIZE if channels is None else (*SIZE, channels)
    image = _albu_image(shape, dtype)
    mask = np.random.default_rng(1).integers(0, 4, shape).astype(np.uint8)
    image_copy, mask_copy = image.copy(), mask.copy()
    transform = SpatialSearchAlbumentations(search, p=1.0)
    before = model_state(search.model)
    data = transform(image=image, mask=mask, label=1)
    assert_same_state(search.model, before)
    assert data["image"].dtype == dtype and data["image"].shape == image.shape
    assert data["mask"].dtype == np.uint8 and data["mask"].shape == mask.shape
    assert np.array_equal(image, image_copy) and np.array_equal(mask, mask_copy)
    view = image[:, ::-1]
    assert not view.flags["C_CONTIGUOUS"]
    assert transform(image=view, label=1)["image"].shape == image.shape


def test_albu_mask_fill_value() -> None:
    """``test_mask_fill_value``: a constant image stays constant under border padding and the mask is
    filled with ``mask_fill`` wherever it comes from outside."""
    transform = SpatialSearchAlbumentations(grid_search(any_shape_model(), padding="border"), mask_fill=1)
    out = transform(image=np.full((32, 32), 100, np.uint8), mask=np.ones((32, 32), np.uint8), label=0)
    assert (out["image"] == 100).all()
    assert (out["mask"] == 1).all()


@pytest.mark.parametrize("name", NAMES)
def test_albu_probability_additional_targets_and_mask_lists(name: str) -> None:
    """``p`` as every transform has it (``p=0`` never searches), ``additional_targets`` and ``masks``
    move with the row chosen for ``image``."""
    search = _search(name)
    calls: list[int] = []
    hook = search.model.register_forward_hook(lambda *_: calls.append(1))
    image = _albu_image((*SIZE, 3), np.float32)
    never = A.Compose([SpatialSearchAlbumentations(search, p=0.0)])(image=image, label=1)
    assert never["image"] is image and not calls
    hook.remove()
    other = _albu_image((*SIZE, 3), np.float32, seed=2)
    masks = [np.random.default_rng(i).integers(0, 3, SIZE).astype(np.uint8) for i in range(2)]
    pipeline = A.ReplayCompose(
        [SpatialSearchAlbumentations(search)], additional_targets={"image2": "image", "mask2": "mask"}
    )
    out = pipeline(image=image, image2=other, masks=masks, mask2=masks[0], label=1)
    row = out["replay"]["transforms"][0]["params"]["roto"]
    to_nchw = lambda x: torch.from_numpy(x).permute(2, 0, 1)[None]  # noqa: E731
    assert np.array_equal(out["image2"], roto_translate(to_nchw(other), row)[0].permute(1, 2, 0).numpy())
    for moved, given in zip([*out["masks"], out["mask2"]], [*masks, masks[0]], strict=True):
        assert np.array_equal(moved, roto_translate_masks(torch.from_numpy(given)[None], row)[0].numpy())


@pytest.mark.parametrize("name", NAMES)
def test_albu_strict_replay_seed_and_pickle(name: str) -> None:
    """``strict=True``, ``ReplayCompose.replay``, ``Compose(seed=...)`` and pickling, over every search.

    ``to_dict`` / ``from_dict`` (``test_augmentations_serialization``) cannot apply: the transform holds
    a model, which albumentations' JSON/YAML cannot carry; it is refused (see the last lines)."""
    model = any_shape_model()
    image = _albu_image((*SIZE, 3), np.uint8)
    other = _albu_image((*SIZE, 3), np.uint8, seed=3)

    def run(seed: int) -> list[np.ndarray]:
        pipeline = A.Compose([SpatialSearchAlbumentations(SEARCHES[name](model))], strict=True, seed=seed)
        return [pipeline(image=image, label=2)["image"] for _ in range(3)]

    first, again = run(5), run(5)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    recorded = A.ReplayCompose([SpatialSearchAlbumentations(SEARCHES[name](model))])(image=image, label=2)
    replayed = A.ReplayCompose.replay(recorded["replay"], image=other)
    row = recorded["replay"]["transforms"][0]["params"]["roto"]
    expected = roto_translate(torch.from_numpy(other).permute(2, 0, 1)[None].float() / 255, row)
    expected = (expected * 255).round().clamp(0, 255).to(torch.uint8)[0].permute(1, 2, 0)
    assert np.array_equal(replayed["image"], expected.numpy())
    pipeline = A.Compose([SpatialSearchAlbumentations(SEARCHES[name](model))], seed=1)
    restored = pickle.loads(pickle.dumps(pipeline))
    assert restored(image=image, label=2)["image"].shape == image.shape
    with pytest.raises(AdvSpatialError, match="cannot be serialised"):
        A.to_dict(pipeline)


@pytest.mark.parametrize("fmt", ["xy", "yx", "xya", "xys", "xyas", "xysa"])
def test_albu_keypoint_formats_move_the_same_point(fmt: str) -> None:
    """``test_keypoint`` over formats: every format moves the point to the same place."""
    search = grid_search(any_shape_model())
    image = _albu_image((*SIZE, 1), np.float32)
    point = {"x": 4.0, "y": 6.0, "a": 30.0, "s": 2.0}
    params = A.KeypointParams(format=fmt, remove_invisible=False)
    out = A.Compose([SpatialSearchAlbumentations(search)], keypoint_params=params)(
        image=image, keypoints=[tuple(point[c] for c in fmt)], label=1
    )
    reference = A.Compose(
        [SpatialSearchAlbumentations(search)],
        keypoint_params=A.KeypointParams(format="xy", remove_invisible=False),
    )(image=image, keypoints=[(4.0, 6.0)], label=1)
    moved = dict(zip(fmt, out["keypoints"][0], strict=True))
    np.testing.assert_allclose([moved["x"], moved["y"]], reference["keypoints"][0], atol=1e-4)
    if "s" in fmt:
        assert moved["s"] == pytest.approx(2.0)  # a roto-translation does not scale


# --------------------------------------------------------------------------------------------------
# kornia: CommonTests (smoke, cardinality, p = 0, p = 1, module, inverse coordinates, gradcheck)
# --------------------------------------------------------------------------------------------------

PARAM_SETS = [{}, {"same_on_batch": True}, {"keepdim": True}, {"p_batch": 1.0, "p": 1.0, "mask_fill": 1.0}]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("param_set", PARAM_SETS)
def test_kornia_smoke(name: str, param_set: dict[str, Any]) -> None:
    """``test_smoke``: parameters generate, the transformation matrices are ``(B, 3, 3)`` and the
    output keeps the batch. Labels are given with ``aug.labels(None)`` (the generic checks pass none)."""
    aug = SpatialSearchKornia(_search(name), **param_set)
    batch_shape = (4, 3, 5, 6)
    params = aug.forward_parameters(batch_shape)
    assert isinstance(params, dict) and params["batch_prob"].shape == (4,)
    test_input = torch.ones(batch_shape)
    with aug.labels(None):
        matrices = aug.compute_transformation(test_input, dict(params), aug.flags)
        assert matrices.shape == (4, 3, 3)
        output = aug(test_input, params=aug.forward_parameters(batch_shape))
    assert output.shape[0] == 4
    assert aug.transform_matrix.shape == (4, 3, 3)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(
    ("input_shape", "expected"),
    [((4, 5), (1, 1, 4, 5)), ((3, 4, 5), (1, 3, 4, 5)), ((2, 3, 4, 5), (2, 3, 4, 5))],
)
def test_kornia_cardinality(name: str, input_shape: tuple[int, ...], expected: tuple[int, ...]) -> None:
    """``test_cardinality`` for ``p = 0`` and ``p = 1``; with ``keepdim=True`` the input's own shape."""
    for p in (0.0, 1.0):
        aug = SpatialSearchKornia(_search(name), p=p)
        with aug.labels(None):
            assert aug(torch.rand(input_shape)).shape == expected
        kept = SpatialSearchKornia(_search(name), p=p, keepdim=True)
        with kept.labels(None):
            assert kept(torch.rand(input_shape)).shape == input_shape


@pytest.mark.parametrize("name", NAMES)
def test_kornia_random_p_0_and_p_1(name: str) -> None:
    """``test_random_p_0``: the input comes back, and nothing is searched. ``test_random_p_1`` /
    ``test_batch``: the expected output and matrix are those of the rows the search chose (a fixed
    expected tensor cannot be written down: the choice depends on the model)."""
    search = _search(name)
    images = torch.rand(2, 3, 4, 5, generator=torch.Generator().manual_seed(3))
    labels = torch.tensor([0, 4])
    never = SpatialSearchKornia(search, p=0.0)
    with never.labels(labels):
        assert (never(images) == images).all()
    assert never.last_result is None
    aug = SpatialSearchKornia(search, p=1.0)
    before = model_state(search.model)
    with aug.labels(labels):
        out = aug(images)
    assert_same_state(search.model, before)
    rows = aug.last_params
    assert rows is not None and torch.equal(rows, aug.last_result.params)  # type: ignore[union-attr]
    assert torch.equal(out, roto_translate(images, rows))
    torch.testing.assert_close(aug.transform_matrix, kornia_matrices(rows, (4, 5)))


@pytest.mark.parametrize("name", ["grid", "worst_of_k", "spatial_pgd"])
def test_kornia_module(name: str) -> None:
    """``test_module``: ``AugmentationSequential(aug, aug)`` equals two calls in a row, and its matrix is
    the product. Not for a search on torch's global generator: the container draws both gates before
    either search runs, so the global stream is consumed in another order than by two calls."""
    search = _search(name)
    aug = SpatialSearchKornia(search, p=0.5)
    sequence = K.AugmentationSequential(aug, aug)
    image = torch.rand(3, 5, 5, generator=torch.Generator().manual_seed(4))
    generator = getattr(search, "generator", None)
    with aug.labels(None):
        torch.manual_seed(42)
        if generator is not None:
            generator.manual_seed(0)
        out1 = aug(image)
        transform1 = aug.transform_matrix
        out2 = aug(out1)
        transform = aug.transform_matrix @ transform1
        torch.manual_seed(42)
        if generator is not None:
            generator.manual_seed(0)
        out_sequence = sequence(image)
    assert out1.shape == out_sequence.shape
    torch.testing.assert_close(out2, out_sequence)
    torch.testing.assert_close(transform, sequence.transform_matrix)


@pytest.mark.parametrize("name", NAMES)
def test_kornia_inverse_coordinate_check(name: str) -> None:
    """``test_inverse_coordinate_check``: each lit output pixel maps back, through the inverse of
    ``transform_matrix``, onto a lit input pixel."""
    image = torch.zeros(1, 3, 50, 100)
    image[:, :, 20:30, 40:60] = 1.0
    aug = SpatialSearchKornia(_search(name), p=1.0)
    with aug.labels(None):
        output = aug(image)
    transform = aug.transform_matrix
    indices = create_meshgrid(50, 100, normalized_coordinates=False).reshape(1, -1, 2)
    back = transform_points(torch.linalg.inv(transform), indices).round().long()[0]
    out_idx = indices.round().long()[0]
    lit = output[0, 0, out_idx[:, 1], out_idx[:, 0]] > 0.9999
    assert int(lit.sum()) > 50
    inside = (back[:, 0] >= 0) & (back[:, 0] < 100) & (back[:, 1] >= 0) & (back[:, 1] < 50) & lit
    assert bool(inside[lit].all())
    assert (image[0, :, back[inside, 1], back[inside, 0]] == 1).all()


def test_kornia_gradcheck_and_exceptions() -> None:
    """``test_gradcheck``: differentiable with respect to the image, with the chosen rows replayed
    (``params=``) so the finite differences do not re-run the search. ``test_exception``: bad arguments
    raise an AdvSpatialError naming them."""
    aug = SpatialSearchKornia(grid_search(any_shape_model()))
    image = torch.rand(1, 3, 5, 5, dtype=torch.float64, requires_grad=True)
    with aug.labels(None):
        aug(image.detach())
    params = aug._params
    assert torch.autograd.gradcheck(lambda x: aug(x, params=params), (image,))
    with aug.labels(None):
        assert aug(image).requires_grad
    for kwargs, match in (
        ({"p": -0.1}, "p must be"),
        ({"p_batch": 2}, "p_batch must be"),
        ({"same_on_batch": 1}, "same_on_batch must be a bool"),
        ({"keepdim": "yes"}, "keepdim must be a bool"),
    ):
        with pytest.raises(AdvSpatialError, match=match):
            SpatialSearchKornia(grid_search(any_shape_model()), **kwargs)
    with aug.labels(torch.tensor([1, 2])), pytest.raises(AdvSpatialError, match="labels must have shape"):
        aug(torch.rand(3, 3, 5, 5))


@pytest.mark.cuda
def test_every_adapter_scores_on_the_models_device() -> None:
    """A CUDA model with CPU inputs: the search runs on the model's device, the outputs stay on the CPU."""
    search = grid_search(any_shape_model().cuda())
    images = torch.rand(2, 3, *SIZE, generator=torch.Generator().manual_seed(9))
    labels = torch.tensor([0, 1])
    rows = search.search(images.cuda(), labels.cuda()).params.cpu()
    out, _ = SpatialSearchV2(search)(images, labels)
    assert out.device.type == "cpu"
    torch.testing.assert_close(out, roto_translate(images, rows))
    aug = SpatialSearchKornia(search)
    with aug.labels(labels):
        out = aug(images)
    assert out.device.type == "cpu"
    torch.testing.assert_close(out, roto_translate(images, rows))
    image = images[0].permute(1, 2, 0).numpy()
    moved = SpatialSearchAlbumentations(search)(image=image, label=0)["image"]
    torch.testing.assert_close(
        torch.from_numpy(moved), roto_translate(images[:1], rows[:1])[0].permute(1, 2, 0)
    )
