"""Adversarial training on digits with a transforms.v2 pipeline applied to each batch."""

from __future__ import annotations

import argparse

import torch
from _common import setup, step
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from advspatial import WorstOfK
from advspatial.adapters import SpatialSearchV2


def main(steps: int = 200, batch_size: int = 64, k: int = 10) -> list[float]:
    """Train ``steps`` batches; the v2 pipeline searches each batch like ``v2.CutMix`` would."""
    model, optimizer, train = setup()
    pipeline = v2.Compose([v2.ToDtype(torch.float32), SpatialSearchV2(WorstOfK(model, k=k))])
    losses: list[float] = []
    while len(losses) < steps:
        for images, labels in DataLoader(train, batch_size=batch_size, shuffle=True):
            images, labels = pipeline(images, labels)
            losses.append(step(model, optimizer, images, labels))
            if len(losses) == steps:
                break
    return losses


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=200)
    print(f"final loss {main(parser.parse_args().steps)[-1]:.3f}")
