"""Adversarial training on digits with kornia's AugmentationSequential on the training device."""

from __future__ import annotations

import argparse

import kornia.augmentation as K
from _common import setup, step
from torch.utils.data import DataLoader

from advspatial import WorstOfK
from advspatial.adapters import SpatialSearchKornia


def main(steps: int = 200, batch_size: int = 64, k: int = 10) -> list[float]:
    """Train ``steps`` batches; labels go to the augmentation explicitly."""
    model, optimizer, train = setup()
    aug = SpatialSearchKornia(WorstOfK(model, k=k))
    augment = K.AugmentationSequential(aug, data_keys=["input"])
    losses: list[float] = []
    while len(losses) < steps:
        for images, labels in DataLoader(train, batch_size=batch_size, shuffle=True):
            with aug.labels(labels):
                images = augment(images)
            losses.append(step(model, optimizer, images, labels))
            if len(losses) == steps:
                break
    return losses


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=200)
    print(f"final loss {main(parser.parse_args().steps)[-1]:.3f}")
