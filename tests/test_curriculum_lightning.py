"""The Lightning callback advances the curriculum like a plain loop does."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from advspatial import AdvSpatialError, CurriculumSchedule, CurriculumSpatial

pl = pytest.importorskip("lightning.pytorch", reason="the Lightning callback needs the lightning extra")
from advspatial.curriculum.lightning_callback import CurriculumCallback  # noqa: E402

MILESTONES = [2, 3]
EPOCHS = 5


class _Module(pl.LightningModule):  # type: ignore[misc]
    def __init__(self, mode: str) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))
        self.mode = mode
        self.cusp = CurriculumSpatial(self.net, steps=1, generator=torch.Generator().manual_seed(0))
        self.lrs: list[float] = []

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], index: int) -> torch.Tensor:
        images, labels = batch
        if index == 0:
            self.lrs.append(self.trainer.optimizers[0].param_groups[0]["lr"])
        return F.cross_entropy(self.net(self.cusp(images, labels)), labels)

    def configure_optimizers(self) -> object:
        optimizer = torch.optim.SGD(self.parameters(), lr=0.1)
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=MILESTONES, gamma=0.1)
        if self.mode == "scheduler":
            self.cusp.follow(scheduler)
        else:
            self.cusp.watch(optimizer)
        return [optimizer], [scheduler]


def _plain_loop_stages(mode: str) -> list[int]:
    net = torch.nn.Linear(1, 1)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=MILESTONES, gamma=0.1)
    cusp = CurriculumSpatial(net)
    cusp.follow(scheduler) if mode == "scheduler" else cusp.watch(optimizer)
    stages = []
    for epoch in range(EPOCHS):
        cusp.update(epoch)
        stages.append(cusp.stage)
        optimizer.step()
        scheduler.step()
    return stages


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["scheduler", "optimizer"])
@pytest.mark.filterwarnings("ignore:.*does not have many workers:UserWarning")  # tiny CPU data set
@pytest.mark.filterwarnings("ignore:.*number of training batches.*:UserWarning")  # one batch per epoch
@pytest.mark.filterwarnings("ignore:.*LeafSpec.*:FutureWarning")  # Lightning's pytree use on new torch
def test_callback_matches_a_plain_loop_and_the_lr_drops(mode: str) -> None:
    module = _Module(mode)
    callback = CurriculumCallback(module.cusp)
    trainer = pl.Trainer(
        max_epochs=EPOCHS,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[callback],
    )
    data = TensorDataset(torch.rand(8, 1, 8, 8), torch.arange(8) % 3)
    trainer.fit(module, DataLoader(data, batch_size=8))
    assert callback.stages == _plain_loop_stages(mode) == [0, 0, 1, 2, 2]
    drops = [i for i in range(1, EPOCHS) if module.lrs[i] < module.lrs[i - 1]]
    changes = [i for i in range(1, EPOCHS) if callback.stages[i] != callback.stages[i - 1]]
    assert drops == changes == MILESTONES
    state = callback.state_dict()
    fresh = CurriculumCallback(CurriculumSpatial(module.net, generator=torch.Generator()))
    fresh.load_state_dict(state)
    assert fresh.curriculum.stage == 2
    assert torch.equal(fresh.curriculum.generator.get_state(), module.cusp.generator.get_state())  # type: ignore[union-attr]


def test_callback_drives_a_bare_schedule_and_rejects_other_objects() -> None:
    schedule = CurriculumSchedule(milestones=[1])
    callback = CurriculumCallback(schedule)

    class _Trainer:
        current_epoch = 1

    callback.on_train_epoch_start(_Trainer(), None)  # type: ignore[arg-type]
    assert callback.stages == [1]
    restored = CurriculumCallback(CurriculumSchedule(milestones=[1]))
    restored.load_state_dict(callback.state_dict())
    assert restored.curriculum.stage == 1
    with pytest.raises(
        AdvSpatialError, match="curriculum must be a CurriculumSpatial or a CurriculumSchedule"
    ):
        CurriculumCallback("cusp")  # type: ignore[arg-type]
