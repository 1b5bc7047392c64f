"""Adaptive try order for early exit: which (image, candidate) pairs to score next (part of layer 3).

Early exit stops scoring an image once one candidate fools the model, so the order in which an
image's candidates are tried decides the cost and never the answer. The order here learns online,
within one search, from three signals that cost no forward pass:

- **Fool rates per class.** Candidates that fooled earlier images of the same (label or predicted)
  class go first, smoothed towards the rate over all classes and, before any evidence, towards a
  prior (the largest transforms first, the identity last). A near miss counts as part of a fool:
  a pair the model got right adds ``(1 - exp(-loss)) / 2`` (with cross-entropy, half the probability
  it gave to the wrong classes), which cut the evaluations of the exact grid on a roto-translation
  trained digits CNN from 1.12x to 1.09x the minimum.
- **Neighbouring candidates.** Evidence is shared between nearby transforms with a Gaussian kernel
  over the grid normalised to ``[-1, 1]`` per axis: fooling rarely depends on one exact angle.
  Affine rows ``(angle, tx, ty, scale, shear_x, shear_y)`` are measured as offsets from the identity,
  with ``log(scale)`` in place of ``scale``; grids above 2048 candidates share no evidence between
  neighbours (the kernel would be too large), only per candidate.
- **What this image survived.** A candidate next to one the image already withstood is tried later.

Images are admitted in cohorts growing by a quarter a round (32, 40, 50, ...) so that early images
teach the later ones, and each live image gets a quarter as many new candidates per round as it has
survived (at least one): late fools waste little of a burst, and a robust image still reaches all K
candidates in a few dozen rounds (about 25 for K = 775). The pairs are packed into full chunks by
the scorer. Against doubling cohorts and allowances this cut the evaluations of the exact grid from
1.44 to 1.30 times the minimum on a standard digits CNN and from 1.086 to 1.051 on an augmented one.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Protocol

import torch
from torch import Tensor

if TYPE_CHECKING:
    from advspatial.engine.tuning import RoundBudget

__all__ = ["prior_order", "score_until_fooled"]

_FIRST_COHORT = 32
_KERNEL_WIDTH = 0.15
_SURVIVAL_PENALTY = 0.5
_CLASS_SMOOTHING = 1.0
_MAX_KERNEL_CANDIDATES = 2048
_NEAR_MISS_WEIGHT = 0.5
_ALLOWANCE_GROWTH = 0.25
_COHORT_GROWTH = 1.25
_SPREAD_PIECE = 4096
_KERNEL_CACHE_SIZE = 8
_KERNELS: dict[tuple[bytes, tuple[int, ...], str], Tensor] = {}


class PairScorer(Protocol):
    """What :func:`score_until_fooled` needs from the engine's scorer."""

    def score(self, rows: Tensor, cols: Tensor) -> tuple[Tensor, Tensor]: ...


def _offsets(candidates: Tensor) -> Tensor:
    """Rows as offsets from the identity: affine rows get ``log(scale)`` in their scale column."""
    if candidates.shape[-1] != 6:
        return candidates
    return torch.cat([candidates[:, :3], candidates[:, 3:4].log(), candidates[:, 4:]], dim=1)


def prior_order(candidates: Tensor) -> Tensor:
    """Candidate indices, largest transforms first and the identity last (the order before evidence).

    Args:
        candidates: ``(K, 3)`` rows ``(angle, tx, ty)`` or ``(K, 6)`` affine rows (scale measured
            as ``log(scale)``); each axis is scaled by its largest magnitude.

    Returns:
        ``(K,)`` long permutation.

    Example:
        >>> prior_order(torch.tensor([[0.0, 0.0, 0.0], [10.0, 1.0, 0.0], [30.0, 3.0, 3.0]]))
        tensor([2, 1, 0])
        >>> affine = [[0.0, 0, 0, 1.0, 0, 0], [0.0, 0, 0, 0.8, 0, 0], [0.0, 0, 0, 1.1, 5, 0]]
        >>> prior_order(torch.tensor(affine))
        tensor([2, 1, 0])
    """
    offsets = _offsets(candidates).abs()
    scale = offsets.amax(dim=0).clamp(min=1e-12)
    size = (offsets / scale).sum(dim=1)
    return torch.argsort(size, descending=True, stable=True)


def _kernel(candidates: Tensor) -> Tensor | None:
    """``(K, K)`` Gaussian similarity of the candidates on the grid scaled to ``[-1, 1]`` per axis.

    Cached by the candidates' values: a search object scores the same grid call after call.
    """
    if candidates.shape[0] > _MAX_KERNEL_CANDIDATES:
        return None
    key = (candidates.cpu().numpy().tobytes(), tuple(candidates.shape), str(candidates.device))
    kernel = _KERNELS.get(key)
    if kernel is None:
        offsets = _offsets(candidates)
        unit = offsets / offsets.abs().amax(dim=0).clamp(min=1e-12)
        kernel = torch.exp(-torch.cdist(unit, unit).square() / (2 * _KERNEL_WIDTH**2))
        if len(_KERNELS) >= _KERNEL_CACHE_SIZE:
            _KERNELS.pop(next(iter(_KERNELS)))
        _KERNELS[key] = kernel
    return kernel


def _spread_to_groups(
    nears: tuple[Tensor, ...], values: tuple[Tensor, ...], groups: Tensor, cols: Tensor, kernel: Tensor | None
) -> None:
    """``near[g] += sum of value[i] * kernel[cols[i]]`` over pairs ``i`` of group ``g``, for each
    ``(near, value)`` of ``zip(nears, values)``.

    Only the columns scored this round enter the product, so a round that tried a few candidates
    costs a few kernel rows, not a ``(G, K) @ (K, K)`` product.
    """
    if kernel is None:
        for near, value in zip(nears, values, strict=True):
            near.index_put_((groups, cols), value, accumulate=True)
        return
    used, slot = torch.unique(cols, return_inverse=True)
    rows = kernel[used]
    for near, value in zip(nears, values, strict=True):
        delta = torch.zeros(near.shape[0], used.shape[0], device=near.device, dtype=near.dtype)
        delta.index_put_((groups, slot), value, accumulate=True)
        near += delta @ rows


def _spread_to_images(near: Tensor, rows: Tensor, cols: Tensor, kernel: Tensor) -> None:
    """``near[rows[i]] += kernel[cols[i]]`` for every pair, in pieces that bound the temporary."""
    for start in range(0, rows.shape[0], _SPREAD_PIECE):
        piece = slice(start, start + _SPREAD_PIECE)
        near.index_add_(0, rows[piece], kernel[cols[piece]])


def score_until_fooled(
    scorer: PairScorer,
    candidates: Tensor,
    classes: Tensor,
    losses: Tensor,
    correct: Tensor,
    scored: Tensor,
    budget: RoundBudget | None = None,
) -> None:
    """Score pairs until every image is fooled once or has had every candidate scored.

    Fills ``losses``, ``correct`` and ``scored`` (all ``(B, K)``) in place. Exact: an image ends
    with ``correct.all(dim=1)`` true only if all K candidates were scored and right.

    Args:
        scorer: scores ``(rows, cols)`` pairs in chunks, returning ``(loss, correct)``.
        candidates: ``(K, 3)`` or ``(K, 6)`` rows used for the order only (the first image's set if
            per-image).
        classes: ``(B,)`` long labels or predicted classes, used to share evidence within a class.
        losses: ``(B, K)`` output, ``-inf`` where not scored.
        correct: ``(B, K)`` output, ``True`` where right or not scored.
        scored: ``(B, K)`` output.
        budget: times the rounds; once they cost more than they saved (see
            :class:`advspatial.engine.tuning.RoundBudget`), every image not fooled yet has all its
            remaining pairs scored in one call. ``None``: rounds until the end.
    """
    batch, count = losses.shape
    device = losses.device
    kernel = _kernel(candidates.float())
    prior = torch.empty(count, device=device)
    prior[prior_order(candidates)] = torch.arange(count, 0, -1, device=device, dtype=prior.dtype) / (
        count + 1
    )
    labels, groups = torch.unique(classes, return_inverse=True)
    # Evidence already spread over neighbouring candidates by the kernel: per class, fools and tries;
    # per image, the candidates it survived.
    fooled_near = torch.zeros(labels.shape[0], count, device=device)
    tried_near = torch.zeros_like(fooled_near)
    survived_near = torch.zeros(batch, count, device=device) if kernel is not None else None
    admitted = min(batch, _FIRST_COHORT)
    tried, unfooled = scored.sum(dim=1), correct.all(dim=1)
    if budget is not None:
        budget.start()
    while True:
        alive = unfooled & (tried < count)
        alive[admitted:] = False
        live = alive.nonzero().squeeze(1)
        if live.numel() == 0:
            if admitted >= batch:
                return
            admitted = min(batch, math.ceil(admitted * _COHORT_GROWTH))
            continue
        if budget is not None and budget.exhausted():
            _score_the_rest(scorer, losses, correct, scored)
            return
        overall = (fooled_near.sum(dim=0) + prior) / (tried_near.sum(dim=0) + 1)
        rate = (fooled_near + _CLASS_SMOOTHING * overall) / (tried_near + _CLASS_SMOOTHING)
        score = rate[groups[live]]
        if survived_near is not None:
            score = score * (1 - _SURVIVAL_PENALTY * survived_near[live].clamp(max=1.0))
        ranking = torch.argsort(score + 1e-9 * prior, dim=1, descending=True, stable=True)
        untried = ~scored[live].gather(1, ranking)
        allowance = (tried[live] * _ALLOWANCE_GROWTH).ceil().clamp(min=1).unsqueeze(1)
        pick = untried & (untried.cumsum(dim=1) <= allowance)
        live_pos, rank_pos = pick.nonzero(as_tuple=True)
        rows, cols = live[live_pos], ranking[live_pos, rank_pos]
        loss, ok = scorer.score(rows, cols)
        losses[rows, cols] = loss
        correct[rows, cols] = ok
        scored[rows, cols] = True
        tried, unfooled = scored.sum(dim=1), correct.all(dim=1)
        pending = unfooled & (tried < count)  # images that may be scored again, admitted or not
        if bool(pending.any()):  # evidence is only worth spreading while someone can use it
            near_miss = _NEAR_MISS_WEIGHT * (1 - torch.exp(-loss.float().clamp(min=0)))
            fooled = torch.where(ok, near_miss.nan_to_num(0.0), torch.ones_like(near_miss))
            _spread_to_groups(
                (fooled_near, tried_near), (fooled, torch.ones_like(fooled)), groups[rows], cols, kernel
            )
            if survived_near is not None and kernel is not None:
                useful = ok & pending[rows]
                _spread_to_images(survived_near, rows[useful], cols[useful], kernel)
        admitted = min(batch, math.ceil(admitted * _COHORT_GROWTH))
        if budget is not None:
            budget.round_done(int(rows.shape[0]), int((count - tried)[~unfooled].sum()))


def _score_the_rest(scorer: PairScorer, losses: Tensor, correct: Tensor, scored: Tensor) -> None:
    """Score every unscored pair of every image not fooled yet, in one call (full chunks)."""
    rows, cols = (~scored & correct.all(dim=1, keepdim=True)).nonzero(as_tuple=True)
    if rows.numel():
        loss, ok = scorer.score(rows, cols)
        losses[rows, cols] = loss
        correct[rows, cols] = ok
        scored[rows, cols] = True
