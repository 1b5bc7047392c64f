"""``torchrun --nproc_per_node 2`` on CPU (gloo): the DDP example and ``advspatial evaluate``."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from tests.processes import run_python
from torch.utils.data import DataLoader, TensorDataset

from advspatial.data import load_digits_28
from advspatial.evaluation import grid_accuracy
from advspatial.models import SmallCNN
from advspatial.training import fit

ROOT = Path(__file__).resolve().parents[1]


def launch(args: list[str], cwd: Path, *, processes: int | None) -> subprocess.CompletedProcess[str]:
    """``python [-m torch.distributed.run --standalone --nproc_per_node N] args`` with this checkout."""
    runner = [] if processes is None else ["-m", "torch.distributed.run", "--standalone"]
    runner += [] if processes is None else ["--nproc_per_node", str(processes)]
    return run_python([*runner, *args], cwd=cwd, env={"OMP_NUM_THREADS": "1"})


@pytest.mark.slow
def test_ddp_example_trains_identically_on_both_ranks_and_grid_matches_one_process(tmp_path: Path) -> None:
    args = ["--epochs", "1", "--k", "3", "--train-images", "256", "--test-images", "41", "--grid", "7", "3"]
    result = launch(
        [str(ROOT / "examples" / "ddp_train.py"), *args, "--output", "run"], tmp_path, processes=2
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 processes (gloo)" in result.stdout
    report = json.loads((tmp_path / "run" / "results.json").read_text())
    assert report["world_size"] == 2 and report["backend"] == "gloo"
    first, second = report["state_checksum_per_rank"]
    assert first == second  # parameters and BatchNorm buffers identical on both ranks
    model = SmallCNN()
    model.load_state_dict(torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True))
    model.eval()
    _, test = load_digits_28(seed=0)
    loader = DataLoader(TensorDataset(*(t[:41] for t in test.tensors)), batch_size=16)
    reference = grid_accuracy(model, loader, rotations=7, translations=3)
    assert report["grid"] == reference.accuracy
    assert report["grid_correct"] == reference.correct.tolist()


@pytest.fixture(scope="module")
def digits_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A factory module, trained weights and 13 test digits as ``<folder>/<digit>/<i>.png``."""
    folder = tmp_path_factory.mktemp("evaluate")
    (folder / "user_models.py").write_text(
        "from advspatial.models import SmallCNN\n\n\ndef make():\n    return SmallCNN()\n"
    )
    train, test = load_digits_28(seed=0)
    torch.manual_seed(0)
    model = SmallCNN()
    fit(model, TensorDataset(*(t[:512] for t in train.tensors)), epochs=2, seed=0)
    torch.save(model.state_dict(), folder / "weights.pt")
    for index in range(13):
        image, label = test[index]
        (folder / "images" / str(int(label))).mkdir(parents=True, exist_ok=True)
        pixels = (image[0].numpy() * 255).round().astype(np.uint8)
        Image.fromarray(pixels, mode="L").save(folder / "images" / str(int(label)) / f"{index}.png")
    return folder


def _evaluate(folder: Path, output: str, processes: int | None) -> dict[str, Any]:
    command = [
        "-m",
        "advspatial.cli.main",
        "evaluate",
        "--model",
        "user_models:make",
        "--weights",
        "weights.pt",
        "--image-folder",
        "images",
        "--grayscale",
        "--batch-size",
        "4",
        "--grid-rotations",
        "7",
        "--grid-translations",
        "3",
        "--pgd-steps",
        "2",
        "--landscape-images",
        "1",
        "--device",
        "cpu",
        "--no-progress",
        "--output",
        output,
    ]
    result = launch(command, folder, processes=processes)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((folder / output / "report.json").read_text())


@pytest.mark.slow
def test_evaluate_under_torchrun_reports_the_single_process_numbers(digits_folder: Path) -> None:
    single = _evaluate(digits_folder, "one", None)
    sharded = _evaluate(digits_folder, "two", 2)
    assert single["world_size"] == 1 and sharded["world_size"] == 2
    assert sharded["accuracy"] == single["accuracy"]
    assert single["accuracy"]["natural"] > 0.0
    for name in ("natural", "random", "worst_of_10", "grid"):
        assert sharded["results"][name]["correct"] == single["results"][name]["correct"], name
    for name in ("natural", "random", "worst_of_10"):
        assert sharded["results"][name]["params"] == single["results"][name]["params"], name
    assert sharded["labels"] == single["labels"]
    assert (digits_folder / "two" / "rotation_profile.png").is_file()
