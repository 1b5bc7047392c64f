"""PNG plots of the evaluation results, drawn with matplotlib's Agg backend (layer 7).

Every function writes one PNG of a fixed pixel size (figure inches x 100 dpi, no tight cropping) and
returns its path. matplotlib is imported here only (``pip install 'advspatial[demo]'``); no global
pyplot state is touched, so the plots are safe in scripts, servers and tests.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

if TYPE_CHECKING:
    from advspatial.evaluation.landscape import LossLandscape
    from advspatial.evaluation.profiles import Profile
    from advspatial.evaluation.rotation_profile import RotationProfile
    from advspatial.evaluation.sweeps import SweepResult

__all__ = [
    "DPI",
    "plot_accuracies",
    "plot_chosen_transforms",
    "plot_landscape",
    "plot_profiles",
    "plot_rotation_profiles",
]

DPI = 100


def _figure(width_px: int, height_px: int) -> Any:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("plots need matplotlib: pip install 'advspatial[demo]'") from error
    figure = Figure(figsize=(width_px / DPI, height_px / DPI), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Any, path: str | Path) -> Path:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(target, dpi=DPI, format="png")
    return target


def plot_accuracies(
    table: Mapping[str, Mapping[str, float]], path: str | Path, *, title: str = "Accuracy under attack"
) -> Path:
    """Grouped bars: one group per model, one bar per attack; an 800 x 400 PNG.

    Args:
        table: ``{model name: {attack name: accuracy fraction}}``.
        path: where the PNG goes (folders are created).

    Example:
        >>> import tempfile, pathlib
        >>> out = pathlib.Path(tempfile.mkdtemp()) / "acc.png"
        >>> plot_accuracies({"standard": {"natural": 0.97, "grid": 0.0}}, out).suffix
        '.png'
    """
    figure = _figure(800, 400)
    axes = figure.add_subplot()
    attacks: list[str] = []
    for row in table.values():
        attacks.extend(name for name in row if name not in attacks)
    width = 0.8 / max(len(table), 1)
    for index, (model_name, row) in enumerate(table.items()):
        xs = [position + index * width for position in range(len(attacks))]
        heights = [100.0 * row.get(name, float("nan")) for name in attacks]
        bars = axes.bar(xs, heights, width=width, label=model_name)
        axes.bar_label(bars, fmt="%.1f", fontsize=8)
    axes.set_xticks([p + 0.4 - width / 2 for p in range(len(attacks))], attacks)
    axes.set_ylim(0, 105)
    axes.set_ylabel("accuracy (%)")
    axes.set_title(title)
    if table:
        axes.legend(loc="upper right")
    return _save(figure, path)


def plot_chosen_transforms(result: SweepResult, path: str | Path) -> Path:
    """Chosen (angle, tx) per sample of one sweep, withstood in blue, fooled in red; 640 x 480 PNG."""
    figure = _figure(640, 480)
    axes = figure.add_subplot()
    params, correct = result.params, result.correct
    for flag, colour, label in ((True, "tab:blue", "withstood"), (False, "tab:red", "fooled")):
        chosen = params[correct == flag]
        axes.scatter(chosen[:, 0], chosen[:, 1], s=12, c=colour, alpha=0.6, label=f"{label} ({len(chosen)})")
    axes.set_xlabel("angle (degrees, counter-clockwise)")
    axes.set_ylabel("tx (pixels, right)")
    axes.set_title(f"{result.name}: accuracy {100 * result.accuracy:.1f}%")
    axes.legend(loc="upper right")
    return _save(figure, path)


def plot_rotation_profiles(profiles: Mapping[str, RotationProfile], path: str | Path) -> Path:
    """Left: accuracy at each angle; right: worst-case accuracy and invariance per range; 960 x 400 PNG."""
    figure = _figure(960, 400)
    left, right = figure.subplots(1, 2)
    for name, profile in profiles.items():
        left.plot(profile.angles, 100 * profile.accuracy_at_angle, marker=".", label=name)
        (line,) = right.plot(
            profile.ranges, 100 * profile.worst_case_accuracy, marker="o", label=f"{name}: accuracy"
        )
        right.plot(
            profile.ranges,
            100 * profile.invariance,
            marker="x",
            linestyle="--",
            color=line.get_color(),
            label=f"{name}: unchanged prediction",
        )
    left.set_xlabel("rotation (degrees, counter-clockwise)")
    left.set_ylabel("accuracy (%)")
    left.set_title("accuracy at each angle")
    right.set_xlabel("rotation range +-r (degrees)")
    right.set_ylabel("% of images")
    right.set_title("worst case over [-r, r]")
    for axes in (left, right):
        axes.set_ylim(0, 105)
        axes.legend(fontsize=8, loc="lower left")
    return _save(figure, path)


def plot_profiles(profiles: Mapping[str, Profile], path: str | Path, *, xlabel: str) -> Path:
    """Agreement (solid) and accuracy (dashed) of each :class:`Profile` over its levels; 640 x 400 PNG.

    Args:
        profiles: ``{model name: profile}`` from :func:`invariance_profile` or
            :func:`robustness_profile`.
        path: where the PNG goes (folders are created).
        xlabel: what the levels are, e.g. ``"rotation range theta (degrees)"`` or ``"eps"``.
    """
    figure = _figure(640, 400)
    axes = figure.subplots()
    for name, profile in profiles.items():
        (line,) = axes.plot(
            profile.levels, [100 * a for a in profile.agreement], marker="o", label=f"{name}: f(x') = f(x)"
        )
        axes.plot(
            profile.levels,
            [100 * a for a in profile.accuracy],
            marker="x",
            linestyle="--",
            color=line.get_color(),
            label=f"{name}: f(x') = y",
        )
    axes.set_xlabel(xlabel)
    axes.set_ylabel("% of images")
    axes.set_ylim(0, 105)
    axes.legend(fontsize=8)
    return _save(figure, path)


def _display(image: Tensor) -> Any:
    image = image.detach().float()
    low, high = image.min(), image.max()
    image = (image - low) / (high - low) if high > low else torch.zeros_like(image)
    if image.shape[0] == 3:
        return image.permute(1, 2, 0).numpy()
    return image[0].numpy()


def _edges(centres: Tensor) -> tuple[float, float]:
    """Outer edges of cells centred on evenly spaced ``centres``."""
    half = float(centres[1] - centres[0]) / 2 if len(centres) > 1 else 0.5
    return float(centres[0]) - half, float(centres[-1]) + half


def plot_landscape(landscape: LossLandscape, path: str | Path) -> Path:
    """Per image: the original, the worst grid transform and the loss heat map; 900 x (300 x B) PNG."""
    batch = landscape.losses.shape[0]
    figure = _figure(900, 300 * batch)
    grid = figure.subplots(batch, 3, squeeze=False, width_ratios=[1, 1, 1.6])
    angles, offsets = landscape.angles, landscape.offsets
    for row in range(batch):
        original, worst, heat = grid[row]
        angle, tx, ty = (float(v) for v in landscape.worst_params[row])
        original.imshow(_display(landscape.images[row]), cmap="gray")
        original.set_title(f"original (label {int(landscape.labels[row])})", fontsize=9)
        worst.imshow(_display(landscape.worst_images[row]), cmap="gray")
        worst.set_title(f"worst: {angle:+.0f} deg, ({tx:+.1f}, {ty:+.1f}) px", fontsize=9)
        for axes in (original, worst):
            axes.set_axis_off()
        extent = (*_edges(offsets), *_edges(angles))
        mesh = heat.imshow(
            landscape.losses[row].numpy(), origin="lower", aspect="auto", extent=extent, cmap="viridis"
        )
        heat.set_xlabel(f"t{landscape.axis} (pixels)")
        heat.set_ylabel("angle (degrees)")
        heat.set_title("cross-entropy", fontsize=9)
        figure.colorbar(mesh, ax=heat)
    return _save(figure, path)
