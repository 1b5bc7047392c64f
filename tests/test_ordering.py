"""Early-exit order (engine/ordering.py): exact robust set, least work on easy cases, prior order."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from advspatial.engine.ordering import prior_order, score_until_fooled
from advspatial.space import RotoTranslationBox


class TableScorer:
    """Fake scorer over a known (B, K) correctness table; counts evaluations and forward calls."""

    def __init__(self, table: torch.Tensor) -> None:
        self.table, self.evaluations, self.calls = table, 0, 0

    def score(self, rows: torch.Tensor, cols: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        assert not self.seen[rows, cols].any(), "a pair was scored twice"
        self.seen[rows, cols] = True
        self.evaluations += int(rows.numel())
        self.calls += 1
        return torch.rand(rows.shape[0]), self.table[rows, cols]

    def run(self, candidates: torch.Tensor, classes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch, count = self.table.shape
        self.seen = torch.zeros(batch, count, dtype=torch.bool)
        losses = torch.full((batch, count), -torch.inf)
        correct = torch.ones(batch, count, dtype=torch.bool)
        scored = torch.zeros(batch, count, dtype=torch.bool)
        score_until_fooled(self, candidates, classes, losses, correct, scored)
        assert torch.equal(scored, self.seen)
        assert torch.isfinite(losses[scored]).all() and (losses[~scored] == -torch.inf).all()
        return correct, scored


def grid() -> torch.Tensor:
    return RotoTranslationBox.of(30.0, 3.0).grid(7, 3).reshape(-1, 3)


@settings(max_examples=60, deadline=None)
@given(
    batch=st.integers(1, 80),
    rate=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**16),
    classes=st.integers(1, 4),
)
def test_robust_set_is_exactly_the_exhaustive_one(batch: int, rate: float, seed: int, classes: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    candidates = grid()
    table = torch.rand(batch, candidates.shape[0], generator=generator) >= rate * torch.rand(
        batch, 1, generator=generator
    )
    labels = torch.randint(0, classes, (batch,), generator=generator) * 7 - 3  # any integers
    correct, scored = TableScorer(table).run(candidates, labels)
    robust = table.all(dim=1)
    assert torch.equal(correct.all(dim=1), robust)
    assert scored[robust].all()  # a robust image is only known robust after every candidate
    # A non-robust image is known fooled by at least one scored pair, and unscored pairs stay "right".
    assert (~correct[~robust]).any(dim=1).all()
    assert correct[~scored].all()


def test_one_fooling_candidate_per_class_is_learned() -> None:
    """Each class is fooled by one transform only: later images of a class find it at once."""
    candidates = grid()
    labels = torch.arange(4).repeat(50)
    key = torch.tensor([3, 17, 40, 60])
    table = torch.ones(200, candidates.shape[0], dtype=torch.bool)
    table[torch.arange(200), key[labels]] = False
    scorer = TableScorer(table)
    _, scored = scorer.run(candidates, labels)
    tries = scored.sum(dim=1).float()
    # Early images explore; images admitted later benefit from what their class taught.
    assert tries[-64:].mean() < tries[:32].mean() / 4
    global_only = TableScorer(table)
    global_only.run(candidates, torch.zeros(200, dtype=torch.long))
    assert scorer.evaluations < global_only.evaluations


def test_all_robust_scores_everything_in_few_rounds() -> None:
    candidates = grid()
    table = torch.ones(100, candidates.shape[0], dtype=torch.bool)
    scorer = TableScorer(table)
    scorer.run(candidates, torch.zeros(100, dtype=torch.long))
    assert scorer.evaluations == table.numel()
    assert scorer.calls <= 24  # allowance and cohorts grow geometrically: logarithmic in K and B


def test_prior_order_puts_largest_first_and_identity_last() -> None:
    candidates = grid()
    order = prior_order(candidates)
    assert sorted(order.tolist()) == list(range(candidates.shape[0]))
    assert candidates[order[-1]].abs().sum() == 0
    assert candidates[order[0]].abs().tolist() == [30.0, 3.0, 3.0]


def test_benchmark_command_refuses_a_folder_without_benchmarks(tmp_path, capsys) -> None:
    from advspatial.cli.main import main

    assert main(["benchmark", "--suite", "--benchmarks", str(tmp_path)]) == 2
    assert "no benchmarks found" in capsys.readouterr().out


class LossTableScorer(TableScorer):
    """A TableScorer whose losses come from a table too."""

    def __init__(self, table: torch.Tensor, losses: torch.Tensor) -> None:
        super().__init__(table)
        self.losses = losses

    def score(self, rows: torch.Tensor, cols: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _, ok = super().score(rows, cols)
        return self.losses[rows, cols], ok


def test_near_misses_steer_the_order(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Counting high-loss survivals as part of a fool finds the fooling transforms sooner.

    Each candidate has a mean margin; an image is fooled where its own noisy margin crosses a
    threshold, and the loss is that margin: survivals with a high loss point to likely fools.
    """
    import advspatial.engine.ordering as ordering

    candidates = grid()
    spent: dict[float, list[int]] = {0.5: [], 0.0: []}
    for seed in range(6):
        generator = torch.Generator().manual_seed(seed)
        mean = torch.rand(candidates.shape[0], generator=generator) * 2
        margin = mean + 0.6 * torch.randn(200, candidates.shape[0], generator=generator)
        table, losses = margin < 2.4, margin.clamp(min=0)
        for weight in spent:
            monkeypatch.setattr(ordering, "_NEAR_MISS_WEIGHT", weight)
            scorer = LossTableScorer(table, losses)
            correct, _ = scorer.run(candidates, torch.zeros(200, dtype=torch.long))
            assert torch.equal(correct.all(dim=1), table.all(dim=1))
            spent[weight].append(scorer.evaluations)
    wins = sum(a < b for a, b in zip(spent[0.5], spent[0.0], strict=True))
    assert wins >= 5 and sum(spent[0.5]) < 0.96 * sum(spent[0.0]), spent
