"""Adversarial training on digits with an albumentations pipeline inside the Dataset.

The transform runs per sample in the DataLoader's workers, so the model's weights are put in shared
memory first: the workers then score with the weights the optimizer is updating.
"""

from __future__ import annotations

import argparse

import albumentations as A
import numpy as np
import torch
from _common import setup, step
from torch.utils.data import DataLoader, Dataset

from advspatial import WorstOfK
from advspatial.adapters import SpatialSearchAlbumentations


class AlbumentationsDigits(Dataset[tuple[torch.Tensor, int]]):
    """Digits as HWC float32 numpy images through an ``A.Compose`` pipeline."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, pipeline: A.Compose) -> None:
        self.images = images.permute(0, 2, 3, 1).numpy().astype(np.float32)
        self.labels = labels.tolist()
        self.pipeline = pipeline

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        out = self.pipeline(image=self.images[index], label=self.labels[index])
        return torch.from_numpy(out["image"]).permute(2, 0, 1), out["label"]


def main(steps: int = 200, batch_size: int = 64, k: int = 10, num_workers: int = 2) -> list[float]:
    """Train ``steps`` batches with per-sample worst-of-10 transforms chosen in the workers."""
    model, optimizer, train = setup()
    model.share_memory()
    pipeline = A.Compose([SpatialSearchAlbumentations(WorstOfK(model, k=k))])
    data = AlbumentationsDigits(*train.tensors, pipeline)
    loader = DataLoader(data, batch_size=batch_size, shuffle=True, num_workers=num_workers)
    losses: list[float] = []
    while len(losses) < steps:
        for images, labels in loader:
            losses.append(step(model, optimizer, images, labels))
            if len(losses) == steps:
                break
    return losses


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=200)
    print(f"final loss {main(parser.parse_args().steps)[-1]:.3f}")
