"""The training scripts in examples/ run (a few dozen steps) and their loss goes down."""

from __future__ import annotations

import importlib
import math
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
pytest.importorskip("sklearn", reason="the examples train on scikit-learn's bundled digits")


@pytest.mark.slow
@pytest.mark.parametrize(
    "name", ["train_dataloader", "train_torchvision_v2", "train_albumentations", "train_kornia"]
)
def test_example_trains(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(EXAMPLES))
    module = importlib.import_module(name)
    try:
        losses = module.main(steps=20, batch_size=32, k=3)
    finally:
        sys.modules.pop(name, None)
    assert len(losses) == 20
    assert all(math.isfinite(v) for v in losses)
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5
