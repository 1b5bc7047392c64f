"""Peak memory of a grid search against the batch size, and the cost of a worst-of-10 training step."""

from __future__ import annotations

import subprocess
import sys

import torch
import torch.nn.functional as F

from advspatial import WorstOfK, roto_translate
from advspatial.engine import default_chunk_size
from advspatial.models import SmallCNN
from benchmarks.conftest import best_seconds, record

_PEAK_RSS = """
import resource, sys, torch
from advspatial import GridSearchRotoTranslation
from advspatial.models import SmallCNN
torch.manual_seed(0)
batch = int(sys.argv[1])
model = SmallCNN().eval()
images = torch.rand(batch, 1, 28, 28)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
labels = torch.zeros(batch, dtype=torch.long)
GridSearchRotoTranslation(model, rotations=31, translations=5).search(images, labels)
print(before, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def peak_rss_mib(batch: int) -> tuple[float, float]:
    """(peak RSS before the search, peak RSS after it) in MiB of a fresh process."""
    out = subprocess.run(
        [sys.executable, "-c", _PEAK_RSS, str(batch)], capture_output=True, text=True, check=True
    ).stdout.split()
    return int(out[0]) / 1024, int(out[1]) / 1024


def test_grid_peak_memory_is_flat_in_batch_size() -> None:
    small, large = 8, 64
    (base_s, peak_s), (base_l, peak_l) = peak_rss_mib(small), peak_rss_mib(large)
    chunk = default_chunk_size(torch.empty(1, 1, 28, 28))
    record(
        "grid 775, digits CNN, peak RSS (CPU)",
        f"growth during the search, B={small} vs B={large} (chunk {chunk})",
        f"{peak_s - base_s:.0f} MiB vs {peak_l - base_l:.0f} MiB (B x 775 warped would be "
        f"{small * 775 * 784 * 4 / 2**20:.0f} vs {large * 775 * 784 * 4 / 2**20:.0f} MiB)",
    )
    assert peak_l - base_l < 1.5 * (peak_s - base_s) + 64


def test_worst_of_10_training_step() -> None:
    torch.manual_seed(0)
    model = SmallCNN()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    images, labels = torch.rand(128, 1, 28, 28), torch.randint(0, 10, (128,))
    search = WorstOfK(model, k=10, generator=torch.Generator().manual_seed(0))
    cpu = torch.device("cpu")

    def train_step(batch: torch.Tensor) -> None:
        model.train()
        optimizer.zero_grad()
        F.cross_entropy(model(batch), labels).backward()
        optimizer.step()

    def with_search() -> None:
        train_step(search(images, labels))

    warped = roto_translate(images.repeat_interleave(10, dim=0), search.sample(128, cpu).reshape(-1, 3))
    chunk = default_chunk_size(images)

    def side_by_side() -> None:
        model.eval()
        with torch.inference_mode():
            for start in range(0, warped.shape[0], chunk):
                model(warped[start : start + chunk])
        train_step(images)

    searched = best_seconds(with_search, cpu, rounds=5)
    reference = best_seconds(side_by_side, cpu, rounds=5)
    record(
        "training step with worst-of-10, digits CNN, B=128",
        "time / (10 inference forwards + 1 training step)",
        f"{searched / reference:.3f} ({searched:.3f} s / {reference:.3f} s)",
    )
