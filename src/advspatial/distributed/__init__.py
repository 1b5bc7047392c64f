"""Distributed data parallel (``torchrun``): process-group set-up, collectives, samplers, DDP wrapping.

Launch any script with ``torchrun --nproc_per_node N script.py``; :func:`init_distributed` reads
``torchrun``'s environment and chooses gloo on CPU, NCCL on CUDA. Searches score a DDP-wrapped model
through ``.module``: the extra forward passes trigger no gradient hooks and no buffer broadcasts.
Evaluation needs nothing from here: every function of :mod:`advspatial.evaluation` shards its data
by itself when a process group is running.
"""

from advspatial.distributed.collectives import (
    all_gather_tensor,
    all_reduce_sum,
    check_same_model,
    check_same_tensor,
)
from advspatial.distributed.context import (
    BACKENDS,
    DistributedContext,
    barrier,
    current_context,
    default_backend,
    destroy_distributed,
    distributed_session,
    get_rank,
    get_world_size,
    init_distributed,
    is_distributed,
    is_main_process,
    launched_by_torchrun,
)
from advspatial.distributed.curriculum import (
    broadcast_object,
    check_same_stage,
    curriculum_state_dict,
    load_curriculum_state_dict,
    save_on_main,
    sync_stage,
)
from advspatial.distributed.sampling import rank_generator, rank_seed, shard_sampler
from advspatial.distributed.training import broadcast_model_state, fit_distributed, wrap_ddp

__all__ = [
    "BACKENDS",
    "DistributedContext",
    "all_gather_tensor",
    "all_reduce_sum",
    "barrier",
    "broadcast_model_state",
    "broadcast_object",
    "check_same_model",
    "check_same_stage",
    "check_same_tensor",
    "current_context",
    "curriculum_state_dict",
    "default_backend",
    "destroy_distributed",
    "distributed_session",
    "fit_distributed",
    "get_rank",
    "get_world_size",
    "init_distributed",
    "is_distributed",
    "is_main_process",
    "launched_by_torchrun",
    "load_curriculum_state_dict",
    "rank_generator",
    "rank_seed",
    "save_on_main",
    "shard_sampler",
    "sync_stage",
    "wrap_ddp",
]
