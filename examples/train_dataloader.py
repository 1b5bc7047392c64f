"""Adversarial training on digits with the batch form right after the DataLoader (the fast path)."""

from __future__ import annotations

import argparse

from _common import setup, step
from torch.utils.data import DataLoader

from advspatial import WorstOfK
from advspatial.adapters import SpatialSearchBatch


def main(steps: int = 200, batch_size: int = 64, k: int = 10) -> list[float]:
    """Train ``steps`` batches on worst-of-10 transforms; returns the losses."""
    model, optimizer, train = setup()
    attack = SpatialSearchBatch(WorstOfK(model, k=k))
    losses: list[float] = []
    while len(losses) < steps:
        for batch in DataLoader(train, batch_size=batch_size, shuffle=True, num_workers=0):
            images, labels = attack(batch)  # on the model's device, with the current weights
            losses.append(step(model, optimizer, images, labels))
            if len(losses) == steps:
                break
    return losses


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=200)
    print(f"final loss {main(parser.parse_args().steps)[-1]:.3f}")
