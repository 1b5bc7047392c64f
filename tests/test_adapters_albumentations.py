"""albumentations adapter: exact images, masks by nearest, boxes and keypoints by geometry."""

from __future__ import annotations

import os
import pickle

import albumentations as A
import numpy as np
import pytest
import torch

from adapter_helpers import grid_search, tiny_model
from advspatial import (
    AdvSpatialError,
    WorstOfK,
    roto_translate,
    roto_translate_boxes,
    roto_translate_masks,
    roto_translate_points,
)
from advspatial.adapters import SpatialSearchAlbumentations
from processes import run_python

SIZE = 12


def _chosen(search: object, image: np.ndarray, label: int) -> torch.Tensor:
    floats = torch.from_numpy(image).float()
    floats = floats / 255 if image.dtype == np.uint8 else floats
    hwc = floats[..., None] if floats.ndim == 2 else floats
    return search.search(hwc.permute(2, 0, 1)[None], torch.tensor([label])).params  # type: ignore[attr-defined]


def test_schema_keeps_the_search_object() -> None:
    search = grid_search(tiny_model())
    transform = SpatialSearchAlbumentations(search, label_key="y")
    assert transform.search is search
    assert transform.label_key == "y"


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_image_mask_boxes_keypoints_follow_the_chosen_params(dtype: type) -> None:
    search = grid_search(tiny_model())
    rng = np.random.default_rng(0)
    image = rng.random((SIZE, SIZE, 1)).astype(np.float32)
    image = (image * 255).astype(np.uint8) if dtype == np.uint8 else image
    mask = rng.integers(0, 4, (SIZE, SIZE)).astype(np.uint8)
    boxes = [(3.0, 3.0, 8.0, 9.0)]
    points = [(4.0, 5.0), (7.0, 6.0)]
    pipeline = A.Compose(
        [SpatialSearchAlbumentations(search)],
        bbox_params=A.BboxParams(format="pascal_voc", label_fields=[]),
        keypoint_params=A.KeypointParams(format="xy", remove_invisible=False),
    )
    out = pipeline(image=image, mask=mask, bboxes=boxes, keypoints=points, label=2)
    row = _chosen(search, image, 2)
    assert not torch.equal(row, torch.zeros_like(row))
    floats = torch.from_numpy(image).float().permute(2, 0, 1)[None]
    floats = floats / 255 if dtype == np.uint8 else floats
    expected = roto_translate(floats, row)[0].permute(1, 2, 0)
    if dtype == np.uint8:
        expected = (expected * 255).round().clamp(0, 255).to(torch.uint8)
    assert out["image"].dtype == dtype
    assert out["image"].shape == image.shape
    assert np.array_equal(out["image"], expected.numpy())
    assert np.array_equal(out["mask"], roto_translate_masks(torch.from_numpy(mask)[None], row)[0].numpy())
    ref_boxes = roto_translate_boxes(torch.tensor([boxes], dtype=torch.float64), row.double(), (SIZE, SIZE))
    np.testing.assert_allclose(np.asarray(out["bboxes"]), ref_boxes[0].numpy(), atol=1e-4)
    centres = torch.tensor([points], dtype=torch.float64) + 0.5
    ref_points = roto_translate_points(centres, row.double(), (SIZE, SIZE))[0] - 0.5
    np.testing.assert_allclose(np.asarray(out["keypoints"]), ref_points.numpy(), atol=1e-4)
    assert out["label"] == 2


def test_geometry_agrees_with_albumentations_own_rotate() -> None:
    """A 90 degree choice moves a lit pixel, its keypoint and its box exactly as ``A.Affine`` does."""
    image = np.zeros((9, 11), np.float32)
    image[2, 7] = 1.0
    kwargs = {
        "bbox_params": A.BboxParams(format="pascal_voc", label_fields=[]),
        "keypoint_params": A.KeypointParams(format="xy", remove_invisible=False),
    }
    search = grid_search(tiny_model(size=1))
    transform = SpatialSearchAlbumentations(search, label_key=None)
    roto = torch.tensor([[90.0, 0.0, 0.0]])
    ours = {
        "image": transform.apply(image, roto),
        "keypoints": transform.apply_to_keypoints(np.array([[7.0, 2.0, 0.0, 0.0, 1.0]]), roto, shape=(9, 11)),
        "bboxes": transform.apply_to_bboxes(np.array([[7 / 11, 2 / 9, 8 / 11, 3 / 9]]), roto, shape=(9, 11)),
    }
    theirs = A.Compose([A.Affine(rotate=(90, 90), p=1.0, interpolation=0, border_mode=0)], **kwargs)(
        image=image, keypoints=[(7.0, 2.0)], bboxes=[(7.0, 2.0, 8.0, 3.0)]
    )
    assert np.array_equal(np.argwhere(ours["image"] > 0.5), np.argwhere(theirs["image"] > 0.5))
    np.testing.assert_allclose(ours["keypoints"][0, :2], theirs["keypoints"][0], atol=1e-5)
    np.testing.assert_allclose(ours["bboxes"][0] * [11, 9, 11, 9], theirs["bboxes"][0], atol=1e-4)


def test_coco_and_yolo_boxes_match_pascal_voc() -> None:
    search = grid_search(tiny_model(channels=3))
    image = np.random.default_rng(1).integers(0, 256, (SIZE, SIZE, 3)).astype(np.uint8)
    voc = (2.0, 3.0, 8.0, 7.0)
    fmt = {"pascal_voc": voc, "coco": (2.0, 3.0, 6.0, 4.0), "yolo": (5 / SIZE, 5 / SIZE, 6 / SIZE, 4 / SIZE)}
    outs = {}
    for name, box in fmt.items():
        pipe = A.Compose(
            [SpatialSearchAlbumentations(search)], bbox_params=A.BboxParams(format=name, label_fields=[])
        )
        outs[name] = np.asarray(pipe(image=image, bboxes=[box], label=1)["bboxes"])[0]
    x, y, w, h = outs["coco"]
    np.testing.assert_allclose([x, y, x + w, y + h], outs["pascal_voc"], atol=1e-4)
    cx, cy, w, h = outs["yolo"] * SIZE
    np.testing.assert_allclose(
        [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], outs["pascal_voc"], atol=1e-3
    )


def test_pickle_round_trip_of_a_pipeline() -> None:
    pipeline = A.Compose([A.HorizontalFlip(p=0.0), SpatialSearchAlbumentations(grid_search(tiny_model()))])
    image = np.random.default_rng(2).random((SIZE, SIZE)).astype(np.float32)
    restored = pickle.loads(pickle.dumps(pipeline))
    assert np.array_equal(restored(image=image, label=4)["image"], pipeline(image=image, label=4)["image"])


def test_bad_inputs_raise_clear_errors() -> None:
    pipeline = A.Compose([SpatialSearchAlbumentations(grid_search(tiny_model()))])
    image = np.zeros((SIZE, SIZE, 1), np.float32)
    with pytest.raises(AdvSpatialError, match="call the pipeline with label="):
        pipeline(image=image)
    with pytest.raises(AdvSpatialError, match="channels first"):
        A.Compose([SpatialSearchAlbumentations(grid_search(tiny_model()))])(
            image=np.zeros((1, SIZE, SIZE), np.float32), label=1
        )
    with pytest.raises(AdvSpatialError, match="integer class index"):
        pipeline(image=image, label="cat")
    with pytest.raises(AdvSpatialError, match="uint8 or float"):
        pipeline(image=image.astype(np.int16), label=1)
    with pytest.raises(AdvSpatialError, match="search must be"):
        SpatialSearchAlbumentations(tiny_model())  # type: ignore[arg-type]


# Issue 14: albumentations' own contracts (each of these failed before).


def test_strict_compose_accepts_the_label_key() -> None:
    search = grid_search(tiny_model())
    image = np.random.default_rng(3).random((SIZE, SIZE, 1)).astype(np.float32)
    out = A.Compose([SpatialSearchAlbumentations(search)], strict=True)(image=image, label=3)
    expected = roto_translate(torch.from_numpy(image).permute(2, 0, 1)[None], _chosen(search, image, 3))
    assert np.array_equal(out["image"], expected[0].permute(1, 2, 0).numpy())
    custom = A.Compose([SpatialSearchAlbumentations(search, label_key="y")], strict=True)
    assert custom(image=image, y=3)["y"] == 3
    with pytest.raises(ValueError, match="not in available keys"):
        custom(image=image, y=3, label=1)  # strict still refuses keys nobody reads


def test_replay_compose_replays_the_chosen_row_on_other_data() -> None:
    search = grid_search(tiny_model())
    rng = np.random.default_rng(4)
    image = rng.random((SIZE, SIZE, 1)).astype(np.float32)
    other = rng.random((SIZE, SIZE, 1)).astype(np.float32)
    pipeline = A.ReplayCompose([SpatialSearchAlbumentations(search)])
    out = pipeline(image=image, label=2)
    row = out["replay"]["transforms"][0]["params"]["roto"]
    assert torch.equal(row, _chosen(search, image, 2))
    replayed = A.ReplayCompose.replay(out["replay"], image=other)  # no label: nothing is searched
    expected = roto_translate(torch.from_numpy(other).permute(2, 0, 1)[None], row)[0].permute(1, 2, 0)
    assert np.array_equal(replayed["image"], expected.numpy())


def test_compose_seed_makes_the_search_reproducible() -> None:
    model = tiny_model()
    image = np.random.default_rng(5).random((SIZE, SIZE, 1)).astype(np.float32)

    def run(seed: int) -> np.ndarray:
        pipeline = A.Compose([SpatialSearchAlbumentations(WorstOfK(model, k=3))], seed=seed)
        return np.stack([pipeline(image=image, label=1)["image"] for _ in range(3)])

    assert np.array_equal(run(137), run(137))
    assert not np.array_equal(run(137), run(138))
    transform = SpatialSearchAlbumentations(WorstOfK(model, k=3))
    outs = []
    for _ in range(2):
        transform.set_random_seed(7)
        outs.append(transform(image=image, label=1)["image"])
    assert np.array_equal(*outs)
    # A search with its own generator keeps drawing from it (albumentations' seed does not touch it).
    own = WorstOfK(model, k=3, generator=torch.Generator().manual_seed(0))
    first = A.Compose([SpatialSearchAlbumentations(own)], seed=1)(image=image, label=1)["image"]
    own.generator.manual_seed(0)  # type: ignore[union-attr]
    second = A.Compose([SpatialSearchAlbumentations(own)], seed=2)(image=image, label=1)["image"]
    assert np.array_equal(first, second)


def test_images_without_image_share_the_row_of_the_first() -> None:
    search = grid_search(tiny_model())
    images = np.random.default_rng(6).random((3, SIZE, SIZE, 1)).astype(np.float32)
    out = A.Compose([SpatialSearchAlbumentations(search)])(images=images, label=4)
    row = _chosen(search, images[0], 4)
    expected = roto_translate(torch.from_numpy(images).permute(0, 3, 1, 2), row.expand(3, 3))
    assert np.array_equal(np.asarray(out["images"]), expected.permute(0, 2, 3, 1).numpy())
    with pytest.raises(AdvSpatialError, match="needs an image"):
        A.Compose([SpatialSearchAlbumentations(search)])(mask=np.zeros((SIZE, SIZE), np.uint8), label=1)


def test_to_dict_is_refused_clearly() -> None:
    pipeline = A.Compose([SpatialSearchAlbumentations(grid_search(tiny_model()))])
    with pytest.raises(AdvSpatialError, match="cannot be serialised"):
        A.to_dict(pipeline)
    with pytest.raises(AdvSpatialError, match="cannot be serialised"):
        pipeline.transforms[0].to_dict()


def test_keypoint_angles_turn_with_the_image_in_compose() -> None:
    search = grid_search(tiny_model())
    image = np.random.default_rng(7).random((SIZE, SIZE, 1)).astype(np.float32)
    params = A.KeypointParams(format="xya", remove_invisible=False, angle_in_degrees=True)
    out = A.Compose([SpatialSearchAlbumentations(search)], keypoint_params=params)(
        image=image, keypoints=[(4.0, 5.0, 10.0)], label=2
    )
    angle = float(_chosen(search, image, 2)[0, 0])
    assert angle != 0
    theirs = A.Compose([A.Affine(rotate=(angle, angle), p=1.0)], keypoint_params=params)(
        image=image, keypoints=[(4.0, 5.0, 10.0)]
    )
    np.testing.assert_allclose(out["keypoints"][0][2], theirs["keypoints"][0][2], atol=1e-3)
    np.testing.assert_allclose(out["keypoints"][0][2], (10.0 + angle) % 360, atol=1e-3)


@pytest.mark.parametrize(
    ("image_dtype", "model_dtype"),
    [(np.float64, torch.float32), (np.float16, torch.float32), (np.uint8, torch.float64)],
)
def test_image_and_model_dtypes_may_differ(image_dtype: type, model_dtype: torch.dtype) -> None:
    """Issue 15: scored in the model's dtype, returned in the image's."""
    search = grid_search(tiny_model().to(model_dtype))
    floats = np.random.default_rng(8).random((SIZE, SIZE, 1))
    image = (floats * 255).astype(np.uint8) if image_dtype == np.uint8 else floats.astype(image_dtype)
    out = A.Compose([SpatialSearchAlbumentations(search)])(image=image, label=1)
    scored = torch.from_numpy(image).to(model_dtype).permute(2, 0, 1)[None]
    row = search.search(scored / 255 if image_dtype == np.uint8 else scored, torch.tensor([1])).params
    assert out["image"].dtype == image_dtype
    source = torch.from_numpy(image).permute(2, 0, 1)[None]
    if image_dtype == np.uint8:
        expected = (roto_translate(source.float() / 255, row) * 255).round().clamp(0, 255).to(torch.uint8)
    else:
        expected = roto_translate(source, row.to(source.dtype))
    assert np.array_equal(out["image"], expected[0].permute(1, 2, 0).numpy())


FORKED_POOL = """
import multiprocessing, numpy as np, torch, albumentations as A
from advspatial import WorstOfK
from advspatial.adapters import SpatialSearchAlbumentations
torch.set_num_threads(2)
model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Flatten(), torch.nn.Linear(8 * 62 * 62, 5))
pipeline = A.Compose([SpatialSearchAlbumentations(WorstOfK(model, k=8))])
image = np.random.default_rng(0).random((64, 64, 3)).astype(np.float32)
pipeline(image=image, label=1)  # the parent searches first: torch's thread pool is now running

def work(_):
    return pipeline(image=image, label=1)["image"].shape

with multiprocessing.get_context("fork").Pool(2) as pool:
    print(pool.map_async(work, range(2)).get(timeout=60))
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX only")
def test_a_forked_pool_after_a_search_does_not_hang() -> None:
    done = run_python(["-c", FORKED_POOL], env={"OMP_NUM_THREADS": "2"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "(64, 64, 3)" in done.stdout


def test_keypoints_follow_an_affine_row_like_albumentations_affine() -> None:
    """A row ``(angle, 0, 0, scale, 0, 0)`` moves keypoints, their angle and their scale as A.Affine."""
    from advspatial import AffineBox

    space = AffineBox(max_rotation=40, max_translation=0, scale=(0.7, 1.4))
    search = WorstOfK(tiny_model(), k=1, space=space, generator=torch.Generator().manual_seed(3))
    image = np.random.default_rng(8).random((SIZE, SIZE, 1)).astype(np.float32)
    params = A.KeypointParams(format="xyas", remove_invisible=False, angle_in_degrees=True)
    out = A.ReplayCompose([SpatialSearchAlbumentations(search)], keypoint_params=params)(
        image=image, keypoints=[(4.0, 5.0, 10.0, 2.0)], label=2
    )
    row = torch.as_tensor(out["replay"]["transforms"][0]["params"]["roto"])[0]
    angle, scale = float(row[0]), float(row[3])
    assert abs(angle) > 1 and abs(scale - 1) > 0.01
    theirs = A.Compose(
        [A.Affine(rotate=(angle, angle), scale=(scale, scale), p=1.0)], keypoint_params=params
    )(image=image, keypoints=[(4.0, 5.0, 10.0, 2.0)])
    np.testing.assert_allclose(out["keypoints"][0][2:4], theirs["keypoints"][0][2:4], atol=1e-3)
    moved = roto_translate_points(
        torch.tensor([[[4.5, 5.5]]], dtype=torch.float64), row[None].double(), (SIZE, SIZE)
    )
    np.testing.assert_allclose(out["keypoints"][0][:2], moved[0, 0].numpy() - 0.5, atol=1e-4)


def test_dataloader_workers_draw_distinct_candidates_from_a_seeded_pipeline() -> None:
    """Workers hold copies of albumentations' random state; the worker seed keeps their draws apart."""
    model = tiny_model()
    model.share_memory()
    image = np.random.default_rng(9).random((SIZE, SIZE, 1)).astype(np.float32)
    pipeline = A.Compose([SpatialSearchAlbumentations(WorstOfK(model, k=1))], seed=3)

    class Same(torch.utils.data.Dataset[np.ndarray]):
        def __len__(self) -> int:
            return 4

        def __getitem__(self, index: int) -> np.ndarray:
            return pipeline(image=image, label=1)["image"]

    def run() -> list[np.ndarray]:
        loader = torch.utils.data.DataLoader(
            Same(), batch_size=None, num_workers=2, generator=torch.Generator().manual_seed(1)
        )
        return [np.asarray(x) for x in loader]

    first, again = run(), run()
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))  # seeded: reproducible
    assert not np.array_equal(first[0], first[1])  # items 0 and 1 come from different workers
