"""Worst-of-k + invariance-regularized training with DDP, then a sharded grid evaluation.

Launch with torchrun (one process per GPU, or CPU processes with gloo):

    torchrun --nproc_per_node 2 examples/ddp_train.py --epochs 2

    # two nodes of 8 GPUs each; run on every node, with its --node_rank
    torchrun --nnodes 2 --nproc_per_node 8 --node_rank 0 \\
        --rdzv_backend c10d --rdzv_endpoint head-node:29500 --rdzv_id demo \\
        examples/ddp_train.py --epochs 8

Each rank trains on its shard with its own worst-of-k draws (``rank_generator``), the loss is
``InvarianceRegularizedLoss`` around the DDP wrapper (so gradients are averaged over the ranks),
rank 0 saves the checkpoint, and the grid accuracy is computed over the test set sharded with
``DistributedSampler``: the same number one process would report.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.distributed as dist
from torch.utils.data import TensorDataset

from advspatial import WorstOfK
from advspatial.data import load_digits_28
from advspatial.distributed import (
    DistributedContext,
    distributed_session,
    fit_distributed,
    rank_generator,
    save_on_main,
    wrap_ddp,
)
from advspatial.evaluation import grid_accuracy, natural_accuracy, worst_of_k_accuracy
from advspatial.losses import InvarianceRegularizedLoss
from advspatial.models import SmallCNN


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--k", type=int, default=10, help="worst-of-k candidates per image")
    parser.add_argument("--batch-size", type=int, default=32, help="per rank")
    parser.add_argument("--train-images", type=int, default=None, help="use the first N training images")
    parser.add_argument("--test-images", type=int, default=None, help="evaluate the first N test images")
    parser.add_argument("--grid", type=int, nargs=2, default=(31, 5), metavar=("ROTATIONS", "TRANSLATIONS"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default="ddp-run", help="folder for checkpoint.pt and results.json")
    return parser.parse_args()


def main() -> None:
    args = parse()
    if not torch.cuda.is_available():
        torch.set_num_threads(1)  # CPU processes share the cores; oversubscribed threads crawl
    with distributed_session() as context:  # gloo on CPU, NCCL on CUDA
        # The DDP model lives in run(): it is freed before the session destroys the process group,
        # not at interpreter exit, where gloo's threads can abort the process.
        run(args, context)


def run(args: argparse.Namespace, context: DistributedContext) -> None:
    """Train, save and evaluate on this rank; rank 0 writes ``results.json``."""
    train, test = load_digits_28(seed=args.seed)
    if args.train_images is not None:
        train = TensorDataset(*(t[: args.train_images] for t in train.tensors))
    if args.test_images is not None:
        test = TensorDataset(*(t[: args.test_images] for t in test.tensors))
    torch.manual_seed(args.seed)  # the same initialisation on every rank
    model = SmallCNN().to(context.device)
    ddp = wrap_ddp(model)
    attack = WorstOfK(ddp, k=args.k, generator=rank_generator(args.seed, device=context.device))
    loss_fn = InvarianceRegularizedLoss(ddp, attack, regularizer="kl")
    history = fit_distributed(
        ddp, train, epochs=args.epochs, batch_size=args.batch_size, loss_fn=loss_fn, seed=args.seed
    )
    output = Path(args.output)
    save_on_main(model.state_dict(), output / "checkpoint.pt")

    rotations, translations = args.grid
    # The evaluation functions shard the test set by themselves; every rank gets the whole result.
    natural = natural_accuracy(model, test)
    worst = worst_of_k_accuracy(model, test, k=args.k, generator=torch.Generator().manual_seed(args.seed))
    grid = grid_accuracy(model, test, rotations=rotations, translations=translations)

    checksum = float(sum(p.detach().double().sum() for p in model.state_dict().values()))
    checksums = [checksum]
    if context.world_size > 1:
        checksums = [0.0] * context.world_size
        dist.all_gather_object(checksums, checksum)
    if context.is_main:
        results = {
            "world_size": context.world_size,
            "backend": context.backend,
            "loss_per_epoch": history,
            "natural": natural.accuracy,
            f"worst_of_{args.k}": worst.accuracy,
            "grid": grid.accuracy,
            "grid_correct": grid.correct.tolist(),
            "state_checksum_per_rank": checksums,
        }
        (output / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        print(
            f"{context.world_size} processes ({context.backend}): loss {history[-1]:.3f}, natural "
            f"{natural.accuracy:.1%}, worst-of-{args.k} {worst.accuracy:.1%}, grid {grid.accuracy:.1%}"
        )


if __name__ == "__main__":
    main()
