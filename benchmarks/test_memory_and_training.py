"""Peak memory of a grid search against the batch size, and the cost of a worst-of-10 training step."""

from __future__ import annotations

import subprocess
import sys

import torch
import torch.nn.functional as F

from advspatial import WorstOfK, roto_translate
from advspatial.engine import default_chunk_size
from advspatial.models import SmallCNN
from benchmarks.conftest import paired_best_seconds, record

_PEAK_RSS = """
import resource, sys, torch
from advspatial import GridSearchRotoTranslation
from advspatial.models import SmallCNN

def status(field):
    with open("/proc/self/status") as lines:
        return next(int(line.split()[1]) for line in lines if line.startswith(field))

torch.manual_seed(0)
batch = int(sys.argv[1])
chunk = int(sys.argv[2]) or None
model = SmallCNN().eval()
images, labels = torch.rand(batch, 1, 28, 28), torch.zeros(batch, dtype=torch.long)
search = GridSearchRotoTranslation(model, rotations=31, translations=5, chunk_size=chunk)
search.search(images[:2], labels[:2])  # warm up: libraries loaded, one chunk's buffers seen
try:
    before = status("VmRSS")
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # reset the high-water mark to the current RSS (Linux)
    reset = True
except OSError:
    before, reset = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, False
search.search(images, labels)
after = status("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(before, after, int(reset))
"""


def peak_growth_mib(batch: int, chunk: int = 0) -> tuple[float, bool]:
    """Peak RSS reached during a 775-candidate grid search above the RSS before it, in MiB.

    Runs in a fresh process. On Linux the high-water mark is reset just before the search
    (``/proc/self/clear_refs``), so the figure is the search's own peak, not the import's.
    Returns (growth, whether the high-water mark could be reset).
    """
    out = subprocess.run(
        [sys.executable, "-c", _PEAK_RSS, str(batch), str(chunk)], capture_output=True, text=True, check=True
    ).stdout.split()
    return (int(out[1]) - int(out[0])) / 1024, out[2] == "1"


def test_grid_peak_memory_is_flat_in_batch_size() -> None:
    small, large = 64, 512
    chunk = default_chunk_size(torch.empty(1, 1, 28, 28))
    # A fixed chunk in both processes: a tuned one could differ between them with the machine's load.
    (grow_s, reset), (grow_l, _) = peak_growth_mib(small, chunk), peak_growth_mib(large, chunk)
    # The same searches in one chunk of B x 775 pairs: what the peak would be without chunking.
    whole_s, _ = peak_growth_mib(small, small * 775)
    warped = {b: b * 775 * 784 * 4 / 2**20 for b in (small, large)}
    record(
        "grid 775, digits CNN, peak RSS growth during the search (CPU)",
        f"B={small} vs B={large}, chunk {chunk} (the input-size rule); one unchunked B={small} search"
        + ("" if reset else " (high-water mark not resettable: lifetime peak)"),
        f"{grow_s:.0f} MiB vs {grow_l:.0f} MiB; unchunked {whole_s:.0f} MiB "
        f"(B x 775 warped inputs alone: {warped[small]:.0f} vs {warped[large]:.0f} MiB)",
    )
    assert grow_l < 1.5 * grow_s + 32, (grow_s, grow_l)


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

    searched, reference = paired_best_seconds(with_search, side_by_side, cpu, rounds=7)
    record(
        "training step with worst-of-10, digits CNN, B=128",
        "time / (10 inference forwards + 1 training step)",
        f"{searched / reference:.3f} ({searched:.3f} s / {reference:.3f} s)",
    )
