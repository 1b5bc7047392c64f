"""Classification: candidates scored against class labels (the default task)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from advspatial.errors import check_label_range, check_labels, check_logits, choice
from advspatial.tasks.base import Task
from advspatial.tasks.penalties import REGULARIZERS, _wide

__all__ = ["Classification"]


class Classification(Task):
    """Logits ``(N, num_classes)`` scored against labels ``(B,)``: today's default everywhere.

    Labels do not move with a transform. The objective is the cross-entropy; a pair is correct when
    the arg-max is the label. Without labels, the reference is the clean prediction and the
    objective is ``KL(p_clean || p_transformed)``; a pair is correct when the predicted class stays.

    Example:
        >>> import torch
        >>> task = Classification()
        >>> loss, correct = task.objective(torch.tensor([[2.0, 0.0], [0.0, 2.0]]), torch.tensor([0, 0]))
        >>> correct.tolist(), bool(loss[1] > loss[0])
        ([True, False], True)
    """

    name = "classification"

    def check_targets(self, targets: object, images: Tensor, name: str = "labels") -> Tensor:
        return check_labels(targets, images.shape[0], images.device, name=name)

    def check_outputs(self, outputs: object, rows: int, size: tuple[int, int]) -> Tensor:
        return _wide(check_logits(outputs, rows))

    def move_targets(self, targets: Tensor, params: Tensor, size: tuple[int, int]) -> Tensor:
        return targets

    def objective(self, outputs: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        check_label_range(targets, outputs.shape[1])
        correct = outputs.argmax(dim=1) == targets
        return F.cross_entropy(outputs.float(), targets, reduction="none"), correct

    def reference(self, outputs: Tensor) -> Tensor:
        return F.log_softmax(outputs.float(), dim=1)

    def reference_objective(self, outputs: Tensor, reference: Tensor) -> tuple[Tensor, Tensor]:
        log_probs = F.log_softmax(outputs.float(), dim=1)
        loss = F.kl_div(log_probs, reference, log_target=True, reduction="none").sum(dim=1)
        return loss, outputs.argmax(dim=1) == reference.argmax(dim=1)

    def groups(self, targets: Tensor) -> Tensor:
        return targets if targets.ndim == 1 else targets.argmax(dim=1)

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        return F.cross_entropy(outputs, targets)

    def penalty(
        self, clean: Tensor, transformed: Tensor, params: Tensor, size: tuple[int, int], regularizer: str
    ) -> Tensor:
        return REGULARIZERS[choice(regularizer, "regularizer", tuple(REGULARIZERS))](clean, transformed)
