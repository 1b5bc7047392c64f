"""``advspatial evaluate`` and ``advspatial benchmark``, driven as a user would (subprocess)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tests.processes import run_cli as advspatial

from advspatial.models import SmallCNN

FACTORIES = """
from advspatial.models import SmallCNN


def make():
    return SmallCNN(num_classes=2)


def make10():
    return SmallCNN(num_classes=10)


def not_a_model():
    return {"weights": 1}
"""


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """A user's folder: a factory module, matching weights and a two-class image folder."""
    (tmp_path / "user_models.py").write_text(FACTORIES)
    torch.manual_seed(0)
    torch.save(SmallCNN(num_classes=2).state_dict(), tmp_path / "weights.pt")
    torch.save(SmallCNN(num_classes=10).state_dict(), tmp_path / "weights10.pt")
    rng = np.random.default_rng(0)
    for name in ("circle", "square"):
        (tmp_path / "images" / name).mkdir(parents=True)
        for index in range(3):
            pixels = (rng.random((30, 30, 3)) * 255).astype(np.uint8)
            Image.fromarray(pixels).save(tmp_path / "images" / name / f"{index}.png")
    return tmp_path


def png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n" and header[12:16] == b"IHDR", f"{path} is not a PNG"
    width, height = struct.unpack(">II", header[16:24])
    with Image.open(path) as image:
        image.load()  # the whole file decodes
        assert np.asarray(image.convert("L")).std() > 5.0, f"{path} looks blank"
    return width, height


SMALL = ["--grid-rotations", "5", "--grid-translations", "3", "--pgd-steps", "2", "--no-progress"]


def test_evaluate_image_folder_writes_report_and_plots(workspace: Path) -> None:
    result = advspatial(
        "evaluate",
        "--model",
        "user_models:make",
        "--weights",
        "weights.pt",
        "--image-folder",
        "images",
        "--grayscale",
        "--resize",
        "28",
        "--batch-size",
        "4",
        "--landscape-images",
        "2",
        "--output",
        "report",
        "--device",
        "cpu",
        *SMALL,
        cwd=workspace,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads((workspace / "report" / "report.json").read_text())
    assert report["data"] == {
        "source": "image_folder",
        "path": "images",
        "classes": ["circle", "square"],
        "images": 6,
    }
    assert report["device"] == "cpu" and report["model"] == "user_models:make"
    assert report["attack_space"]["grid"] == [5, 3, 3] and report["attack_space"]["max_rotation"] == 30.0
    assert report["labels"] == [0, 0, 0, 1, 1, 1]
    assert set(report["accuracy"]) == {"natural", "random", "worst_of_10", "grid", "first_order"}
    for name, entry in report["results"].items():
        assert entry["samples"] == 6 and len(entry["correct"]) == 6 and len(entry["params"]) == 6
        assert report["accuracy"][name] == pytest.approx(sum(entry["correct"]) / 6)
        assert all(abs(p[0]) <= 30 + 1e-4 and abs(p[1]) <= 3 + 1e-4 for p in entry["params"])
    natural = report["results"]["natural"]["correct"]
    grid = report["results"]["grid"]["correct"]
    assert all(n or not g for n, g in zip(natural, grid, strict=True))  # grid-robust implies right
    assert report["results"]["grid"]["exhaustive_evaluations"] == 6 * 45
    assert report["rotation_profile"]["invariance"][0] == 1.0
    sizes = {
        "accuracy": (800, 400),
        "grid_transforms": (640, 480),
        "rotation_profile": (960, 400),
        "landscape": (900, 600),
    }
    assert report["plots"] == {name: f"{name}.png" for name in sizes}
    for name, size in sizes.items():
        assert png_size(workspace / "report" / f"{name}.png") == size
    assert "grid" in result.stdout and "report.json" in result.stdout


def write_idx(path: Path, array: np.ndarray) -> None:
    """The MNIST idx format: magic (0, 0, dtype 0x08, ndim), big-endian sizes, raw bytes."""
    header = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


@pytest.mark.slow
def test_evaluate_torchvision_dataset_on_disk(workspace: Path) -> None:
    raw = workspace / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for prefix, count in (("train", 4), ("t10k", 5)):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (count, 28, 28)))
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, (count,)))
    result = advspatial(
        "evaluate",
        "--model",
        "user_models:make10",
        "--random-weights",
        "--dataset",
        "MNIST",
        "--root",
        "data",
        "--limit",
        "4",
        "--landscape-images",
        "1",
        "--output",
        "mnist",
        *SMALL,
        cwd=workspace,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads((workspace / "mnist" / "report.json").read_text())
    assert report["data"] == {
        "source": "torchvision",
        "dataset": "MNIST",
        "path": "data",
        "split": "test",
        "images": 4,
    }
    assert len(report["results"]["grid"]["correct"]) == 4
    assert png_size(workspace / "mnist" / "landscape.png") == (900, 300)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "user_models:make", "--weights", "missing.pt"], "--weights: file not found: missing.pt"),
        (
            ["--model", "user_models:not_a_model", "--random-weights"],
            "returned an object of type dict, expected a torch.nn.Module",
        ),
        (["--model", "user_models:make", "--weights", "weights10.pt"], "does not match the model"),
        (["--model", "no_such_module:make", "--random-weights"], "cannot import module 'no_such_module'"),
        (
            ["--model", "user_models:make", "--random-weights", "--image-folder", "empty"],
            "no images found in empty",
        ),
        (
            ["--model", "user_models:make", "--random-weights", "--dataset", "CIFAR10", "--root", "."],
            "never downloads",
        ),
    ],
)
def test_evaluate_explains_bad_input(workspace: Path, args: list[str], message: str) -> None:
    (workspace / "empty" / "some_class").mkdir(parents=True)
    (workspace / "empty" / "some_class" / "notes.txt").write_text("not an image")
    if "--image-folder" not in args and "--dataset" not in args:
        args = [*args, "--image-folder", "images"]
    result = advspatial("evaluate", *args, "--no-progress", cwd=workspace)
    assert result.returncode == 2
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert not (workspace / "advspatial-report").exists()


def test_mismatched_weights_name_the_layers(workspace: Path) -> None:
    result = advspatial(
        "evaluate",
        "--model",
        "user_models:make",
        "--weights",
        "weights10.pt",
        "--image-folder",
        "images",
        cwd=workspace,
    )
    assert result.returncode == 2
    assert "head.weight: file (10, 32) vs model (2, 32)" in result.stderr


def test_benchmark_quick_prints_the_ratio_table(tmp_path: Path) -> None:
    result = advspatial("benchmark", "--quick", "--device", "cpu", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "one round after a warm-up" in result.stdout and "1 rounds" not in result.stdout
    rows = [
        line for line in result.stdout.splitlines() if line.startswith("| worst") or line.startswith("| grid")
    ]
    assert len(rows) == 2
    evaluations = []
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        evaluations.append(int(cells[1]))
        search, bare, ratio = float(cells[2].rstrip(" s")), float(cells[3].rstrip(" s")), float(cells[4])
        assert search > 0 and bare > 0
        # The times print to the millisecond: the ratio must lie within what their rounding allows.
        half = 5e-4
        lowest, highest = (search - half) / (bare + half), (search + half) / max(bare - half, 1e-9)
        assert lowest - 2e-3 <= ratio <= highest + 2e-3
    assert evaluations == [320, 1550]
