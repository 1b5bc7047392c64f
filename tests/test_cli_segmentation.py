"""``advspatial evaluate --task segmentation``: image and mask folders, the report, the user's mistakes."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from advspatial.cli.main import main
from advspatial.data import load_digits_segmentation

FACTORIES = """
import torch
from torch import nn
from advspatial.models import UNet


def unet():
    torch.manual_seed(0)
    return UNet(in_channels=1, num_classes=11)


def small_unet():
    torch.manual_seed(0)
    return UNet(in_channels=1, num_classes=3)


def classifier():
    return nn.Sequential(nn.Flatten(), nn.Linear(32 * 32, 11))


FORWARDS = []


def counted_unet():
    model = unet()
    model.register_forward_pre_hook(lambda module, inputs: FORWARDS.append(inputs[0].shape[0]))
    return model
"""


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    (tmp_path / "seg_models.py").write_text(FACTORIES)
    namespace: dict[str, object] = {}
    exec(FACTORIES, namespace)
    unet = namespace["unet"]
    assert callable(unet)
    torch.save(unet().state_dict(), tmp_path / "unet.pt")
    _, test = load_digits_segmentation()
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for index in range(6):
        image, mask = test[index]
        Image.fromarray((image[0].numpy() * 255).astype(np.uint8)).save(tmp_path / "images" / f"d{index}.png")
        Image.fromarray(mask.numpy().astype(np.uint8), mode="L").save(tmp_path / "masks" / f"d{index}.png")
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    sys.modules.pop("seg_models", None)


BASE = [
    "evaluate", "--task", "segmentation", "--model", "seg_models:unet", "--weights", "unet.pt",
    "--image-folder", "images", "--mask-folder", "masks", "--grayscale", "--no-progress",
    "--grid-rotations", "3", "--grid-translations", "3", "--k", "3", "--pgd-steps", "1",
]  # fmt: skip


def test_segmentation_report(workspace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*BASE, "--output", "report"]) == 0
    out = capsys.readouterr().out
    assert "mIoU" in out and "robust" in out
    report = json.loads((workspace / "report" / "report.json").read_text())
    assert report["task"].startswith("Segmentation(ignore_index=255")
    assert report["data"]["images"] == 6 and "rotation_profile" not in report
    assert set(report["metrics"]) == {"natural", "random", "worst_of_3", "grid", "first_order"}
    for name, metrics in report["metrics"].items():
        assert 0.0 <= metrics["miou"] <= 1.0, name
    assert report["results"]["grid"]["exhaustive_evaluations"] == 6 * 27
    assert sorted(report["plots"]) == ["accuracy", "grid_transforms"]


def _write_mask(path: Path, array: np.ndarray, mode: str = "L") -> None:
    Image.fromarray(array, mode=mode).save(path)


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing mask", "--mask-folder: no mask <name>.png"),
        ("colour mask", "masks must be single-channel PNGs"),
        ("mask size", "is 31 x 31 px but its image is 32 x 32 px"),
        ("classifier", "must return per-pixel logits"),
        ("class out of range", "the masks hold class 10 but the model has 3 outputs"),
        ("no mask folder", "--task segmentation needs --image-folder"),
        ("mask folder without task", "--mask-folder is read with --task segmentation only"),
    ],
)
def test_user_mistakes_exit_2_with_one_line(
    case: str, message: str, workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [*BASE, "--output", "report"]
    if case == "missing mask":
        (workspace / "masks" / "d3.png").unlink()
    elif case == "colour mask":
        _write_mask(workspace / "masks" / "d2.png", np.zeros((32, 32, 3), dtype=np.uint8), mode="RGB")
    elif case == "mask size":
        _write_mask(workspace / "masks" / "d1.png", np.zeros((31, 31), dtype=np.uint8))
    elif case == "classifier":
        args = [*args, "--random-weights"]
        args = [a for a in args if a not in ("--weights", "unet.pt")]
        args[args.index("seg_models:unet")] = "seg_models:classifier"
    elif case == "class out of range":
        args = [a for a in args if a not in ("--weights", "unet.pt")] + ["--random-weights"]
        args[args.index("seg_models:unet")] = "seg_models:small_unet"
    elif case == "no mask folder":
        index = args.index("--mask-folder")
        args = args[:index] + args[index + 2 :]
    elif case == "mask folder without task":
        index = args.index("--task")
        args = args[:index] + args[index + 2 :]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (workspace / "report" / "report.json").exists()


@pytest.mark.parametrize(
    ("case", "name"),
    [("image", "images/d4.png"), ("JPEG image", "images/d4.jpg"), ("mask", "masks/d4.png")],
)
def test_a_truncated_file_is_refused_before_the_model_runs(
    case: str, name: str, workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = workspace / name
    if case == "JPEG image":  # noise at quality 95: the first half of the file holds its whole header
        (workspace / "images" / "d4.png").unlink()
        noise = (np.random.default_rng(0).random((32, 32)) * 255).astype(np.uint8)
        Image.fromarray(noise, mode="L").save(path, quality=95)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with Image.open(path) as opened:
        assert opened.size == (32, 32)  # the header still reads: only decoding finds the cut
    args = [*BASE, "--output", "report"]
    args[args.index("seg_models:unet")] = "seg_models:counted_unet"
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    flag = "--mask-folder" if case == "mask" else "--image-folder"
    assert len(err) == 1 and f"{flag}: cannot read {name}: image file is truncated" in err[0], err
    forwards = sys.modules["seg_models"].FORWARDS
    assert forwards == []  # refused before any forward pass of the model
    sys.modules["seg_models"].counted_unet()(torch.zeros(1, 1, 32, 32))
    assert forwards == [1]  # the counter counts
    assert not (workspace / "report").exists()


def test_limit_keeps_evenly_spaced_pairs_and_decodes_only_those(workspace: Path) -> None:
    from advspatial.cli.evaluate import _IMAGE_SUFFIXES, _transform
    from advspatial.cli.segmentation_folder import SegmentationFolder
    from advspatial.errors import AdvSpatialError

    def folder(limit: int | None) -> SegmentationFolder:
        return SegmentationFolder(
            Path("images"), Path("masks"), _transform(None, True), None, _IMAGE_SUFFIXES, limit=limit
        )

    for name in ("d5", "d3"):  # masks of pairs that --limit 3 leaves out
        data = (workspace / "masks" / f"{name}.png").read_bytes()
        (workspace / "masks" / f"{name}.png").write_bytes(data[: len(data) // 2])
    kept = folder(3)
    assert [image.name for image, _ in kept.pairs] == ["d0.png", "d2.png", "d4.png"]
    assert kept[2][1].shape == (32, 32)
    with pytest.raises(AdvSpatialError, match=r"cannot read masks/d3\.png: image file is truncated"):
        folder(None)


def test_segmentation_demo_runs_every_recipe() -> None:
    from advspatial.cli.demo_segmentation import (
        SEGMENTATION_RECIPES,
        format_segmentation_table,
        run_segmentation_demo,
    )

    lines: list[str] = []
    rows = run_segmentation_demo(epochs=1, test_images=8, grid=(3, 1), progress=False, log=lines.append)
    assert [row.name for row in rows] == list(SEGMENTATION_RECIPES)
    assert len(lines) == 3 and all("mIoU natural" in line for line in lines)
    for row in rows:
        assert row.grid_evaluations == 8 * 3
        for miou, robust in row.scores.values():
            assert 0.0 <= miou <= 1.0 and 0.0 <= robust <= 1.0
    assert format_segmentation_table(rows).count("\n") == 4


def test_natural_and_worst_of_10_is_the_mean_of_the_natural_and_the_worst_of_10_losses() -> None:
    from advspatial.cli.demo_segmentation import natural_and_worst_of_10, standard, worst_of_10
    from advspatial.models import UNet

    images, masks = (t[:6] for t in load_digits_segmentation()[1].tensors)
    torch.manual_seed(0)
    model = UNet(width=4).eval()  # eval mode: one forward over both views equals two separate ones
    both = natural_and_worst_of_10(model, 3)(images, masks)
    expected = 0.5 * (standard(model, 3)(images, masks) + worst_of_10(model, 3)(images, masks))
    torch.testing.assert_close(both, expected)
