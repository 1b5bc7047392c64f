"""A small box / keypoint regressor: U-Net heatmaps read out by a soft-argmax, in pixel coordinates."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advspatial.errors import choice, positive_int
from advspatial.models.unet import UNet

__all__ = ["HeatmapRegressor", "soft_argmax"]


def soft_argmax(heatmaps: Tensor) -> tuple[Tensor, Tensor]:
    """Expected pixel centre under the softmax of each ``(H, W)`` map: ``((N, P, 2) xy, (N, P, H, W) p)``.

    Coordinates are the library's continuous pixel coordinates: pixel ``(row i, column j)`` has its
    centre at ``(j + 0.5, i + 0.5)``, so the result lies in ``[0.5, W - 0.5] x [0.5, H - 0.5]``.

    Example:
        >>> maps = torch.full((1, 1, 3, 4), -1e4)
        >>> maps[0, 0, 2, 1] = 0.0
        >>> soft_argmax(maps)[0]
        tensor([[[1.5000, 2.5000]]])
    """
    n, p, height, width = heatmaps.shape
    probs = heatmaps.flatten(2).softmax(dim=-1).reshape(n, p, height, width)
    xs = torch.arange(width, device=heatmaps.device, dtype=probs.dtype) + 0.5
    ys = torch.arange(height, device=heatmaps.device, dtype=probs.dtype) + 0.5
    x = (probs.sum(dim=2) * xs).sum(dim=-1)
    y = (probs.sum(dim=3) * ys).sum(dim=-1)
    return torch.stack([x, y], dim=-1), probs


class HeatmapRegressor(nn.Module):
    """Regresses a box ``(N, 4)`` or keypoints ``(N, P, 2)`` in pixels from ``(N, C, H, W)`` images.

    A :class:`UNet` trunk gives per-pixel maps read out by a soft-argmax (the expectation of the pixel
    centres under a spatial softmax, Nibali et al. 2018 "DSNT"), so positions are predicted where they
    are seen, for any image size, and the output moves with the image.

    - ``output="points"``: ``num_points`` heatmaps, one point each: ``(N, num_points, 2)`` ``(x, y)``.
    - ``output="box"``: one heatmap for the box centre ``(cx, cy)`` and two maps for its width and height
      (``softplus``, read out with the centre's softmax weights): ``(N, 4)`` ``(x1, y1, x2, y2)`` with
      ``x1 = cx - w / 2`` etc., so that ``x1 <= x2`` and ``y1 <= y2`` always hold.

    Coordinates follow the library's convention (top-left corner of the image ``(0, 0)``, pixel centres
    at half-integers), the targets of :func:`advspatial.data.load_digits_localization`.

    Args:
        in_channels: image channels.
        output: ``"box"`` or ``"points"``.
        num_points: points per image (``output="points"`` only).
        width: channels of the trunk's first level.
        depth: down-sampling steps of the trunk.

    Shape:
        - input: ``(N, in_channels, H, W)`` float.
        - output: ``(N, 4)`` XYXY pixels (``"box"``) or ``(N, num_points, 2)`` xy pixels (``"points"``).

    Example:
        >>> net = HeatmapRegressor(output="box").eval()
        >>> net(torch.zeros(2, 1, 40, 40)).shape
        torch.Size([2, 4])
        >>> HeatmapRegressor(output="points", num_points=3)(torch.zeros(2, 1, 40, 40)).shape
        torch.Size([2, 3, 2])
    """

    def __init__(
        self,
        in_channels: int = 1,
        output: Literal["box", "points"] = "points",
        num_points: int = 1,
        width: int = 8,
        depth: int = 2,
    ) -> None:
        super().__init__()
        self.output = choice(output, "output", ("box", "points"))
        self.num_points = positive_int(num_points, "num_points")
        maps = 3 if self.output == "box" else self.num_points
        self.trunk = UNet(in_channels, maps, width=width, depth=depth)

    def forward(self, x: Tensor) -> Tensor:
        maps = self.trunk(x)
        if self.output == "points":
            return soft_argmax(maps)[0]
        centre, probs = soft_argmax(maps[:, :1])
        size = (F.softplus(maps[:, 1:]) * probs).sum(dim=(-2, -1))  # (N, 2) width, height
        return torch.cat([centre[:, 0] - size / 2, centre[:, 0] + size / 2], dim=-1)
