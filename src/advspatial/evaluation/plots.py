"""PNG plots of the evaluation results, drawn with matplotlib's Agg backend (layer 7).

Every function writes one PNG of a fixed pixel size (figure inches x 100 dpi, no tight cropping) and
returns its path. matplotlib is imported here only (``pip install 'advspatial[demo]'``); no global
pyplot state is touched, so the plots are safe in scripts, servers and tests.

The plots take plain data (tensors, names, titles) or any object with the attributes a small
protocol lists (:class:`ProfileCurves`, :class:`RotationCurves`, :class:`LandscapeData`); the
result types call them from their ``save_plot`` and this module imports none of them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor

__all__ = [
    "DPI",
    "LandscapeData",
    "ProfileCurves",
    "RotationCurves",
    "plot_accuracies",
    "plot_chosen_transforms",
    "plot_landscape",
    "plot_profiles",
    "plot_rotation_profiles",
]

DPI = 100


class ProfileCurves(Protocol):
    """A metric over perturbation sizes (e.g. :class:`advspatial.evaluation.Profile`)."""

    @property
    def levels(self) -> Sequence[float]: ...
    @property
    def agreement(self) -> Sequence[float]: ...
    @property
    def accuracy(self) -> Sequence[float]: ...


class RotationCurves(Protocol):
    """Per-angle and per-range curves (e.g. :class:`advspatial.evaluation.RotationProfile`)."""

    @property
    def angles(self) -> Tensor: ...
    @property
    def accuracy_at_angle(self) -> Tensor: ...
    @property
    def ranges(self) -> Tensor: ...
    @property
    def worst_case_accuracy(self) -> Tensor: ...
    @property
    def invariance(self) -> Tensor: ...


class LandscapeData(Protocol):
    """Loss slices and the worst of their grid (e.g. :class:`advspatial.evaluation.LossLandscape`)."""

    @property
    def images(self) -> Tensor: ...
    @property
    def labels(self) -> Tensor: ...
    @property
    def angles(self) -> Tensor: ...
    @property
    def offsets(self) -> Tensor: ...
    @property
    def cross_offsets(self) -> Tensor: ...
    @property
    def axis(self) -> str: ...
    @property
    def losses(self) -> Tensor: ...
    @property
    def correct(self) -> Tensor: ...
    @property
    def worst_params(self) -> Tensor: ...
    @property
    def worst_images(self) -> Tensor: ...
    @property
    def grid_worst_params(self) -> Tensor: ...
    @property
    def grid_worst_loss(self) -> Tensor: ...
    @property
    def grid_fooled(self) -> Tensor: ...


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


def _tally(points: Tensor) -> tuple[Tensor, Tensor]:
    """The distinct rows of ``points`` and how many times each occurs."""
    if points.shape[0] == 0:
        return points, torch.zeros(0, dtype=torch.long)
    return torch.unique(points, dim=0, return_counts=True)


def plot_chosen_transforms(params: Tensor, correct: Tensor, path: str | Path, *, title: str = "") -> Path:
    """The chosen transform per sample: (angle, tx) left, (angle, ty) right; a 640 x 480 PNG.

    Withstood samples in blue, fooled in red. Samples that chose the same point are drawn once,
    with a marker whose area grows with their number, and the number written next to it.

    Args:
        params: ``(N, 3)`` rows ``(angle, tx, ty)``.
        correct: ``(N,)`` bool, ``False`` where the sample was fooled.
        path: where the PNG goes (folders are created).
        title: the figure's title (e.g. model, attack and accuracy).

    Example:
        >>> import tempfile, pathlib
        >>> out = pathlib.Path(tempfile.mkdtemp()) / "chosen.png"
        >>> params = torch.tensor([[30.0, 3.0, 0.0], [30.0, 3.0, 0.0], [-10.0, 0.0, 3.0]])
        >>> plot_chosen_transforms(params, torch.tensor([False, False, True]), out, title="grid").suffix
        '.png'
    """
    figure = _figure(640, 480)
    panels = figure.subplots(1, 2, sharex=True)
    params, correct = params.detach().float().cpu(), correct.detach().bool().cpu()
    for column, (axes, label) in enumerate(
        zip(panels, ("tx (pixels, right)", "ty (pixels, down)"), strict=True)
    ):
        for flag, colour, name in ((True, "tab:blue", "withstood"), (False, "tab:red", "fooled")):
            points, counts = _tally(params[correct == flag][:, [0, column + 1]])
            axes.scatter(
                points[:, 0],
                points[:, 1],
                s=(16 * counts).tolist(),
                c=colour,
                alpha=0.5,
                edgecolors="none",
                label=f"{name} ({int(counts.sum())} images)",
            )
            for (x, y), count in zip(points.tolist(), counts.tolist(), strict=True):
                if count > 1:
                    axes.annotate(str(count), (x, y), fontsize=7, ha="center", va="center")
        axes.set_xlabel("angle (degrees, ccw)", fontsize=8)
        axes.set_ylabel(label, fontsize=8)
        axes.tick_params(labelsize=7)
    panels[0].legend(loc="upper left", fontsize=7, markerscale=0.5)
    panels[0].set_title("angle, tx (area: number of images)", fontsize=8)
    panels[1].set_title("angle, ty", fontsize=8)
    if title:
        figure.suptitle(title)
    return _save(figure, path)


def plot_rotation_profiles(profiles: Mapping[str, RotationCurves], path: str | Path) -> Path:
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


def plot_profiles(profiles: Mapping[str, ProfileCurves], path: str | Path, *, xlabel: str) -> Path:
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


def _class_name(label: int, class_names: Sequence[str] | None) -> str:
    if class_names is not None and 0 <= label < len(class_names):
        return f"{class_names[label]!r}"
    return f"class {label}"


def plot_landscape(
    landscape: LandscapeData,
    path: str | Path,
    *,
    title: str = "",
    class_names: Sequence[str] | None = None,
) -> Path:
    """Per image: the original, the worst of the slice shown, and the loss heat map; 900 x (300 x B) PNG.

    The heat map is the slice of the (angle, tx, ty) grid where the other offset is 0; the middle
    panel shows that slice's worst point. The worst point of the whole grid is marked on the heat
    map with a star when it lies on the slice, and given in the heat map's title otherwise.

    Args:
        landscape: e.g. a :class:`advspatial.evaluation.LossLandscape`.
        path: where the PNG goes (folders are created).
        title: the figure's title, e.g. the model's or the training recipe's name.
        class_names: names of the classes by index (e.g. an ``ImageFolder``'s ``classes``).
    """
    batch = landscape.losses.shape[0]
    figure = _figure(900, 300 * batch)
    grid = figure.subplots(batch, 3, squeeze=False, width_ratios=[1, 1, 1.6])
    angles, offsets = landscape.angles, landscape.offsets
    shown, other = landscape.axis, "y" if landscape.axis == "x" else "x"
    slice_name = f"t{other} = 0 slice"
    size = f"{len(angles)} x {len(offsets)} x {len(landscape.cross_offsets)}"
    column = 1 if shown == "x" else 2
    for row in range(batch):
        original, worst, heat = grid[row]
        label = int(landscape.labels[row])
        losses, correct = landscape.losses[row], landscape.correct[row]
        flat = int(losses.reshape(-1).argmax())
        worst_loss, worst_right = float(losses.reshape(-1)[flat]), bool(correct.reshape(-1)[flat])
        angle, tx, ty = (float(v) for v in landscape.worst_params[row])
        verdict = "fooled" if bool(landscape.grid_fooled[row]) else "withstood"
        original.imshow(_display(landscape.images[row]), cmap="gray")
        original.set_title(
            f"label {_class_name(label, class_names)}\n{verdict} on the {size} grid", fontsize=9
        )
        worst.imshow(_display(landscape.worst_images[row]), cmap="gray")
        worst.set_title(
            f"worst of the {slice_name}\n{angle:+.0f} deg, ({tx:+.1f}, {ty:+.1f}) px\n"
            f"loss {worst_loss:.3f}, {'right' if worst_right else 'fooled'}",
            fontsize=8,
        )
        for axes in (original, worst):
            axes.set_axis_off()
        extent = (*_edges(offsets), *_edges(angles))
        mesh = heat.imshow(losses.numpy(), origin="lower", aspect="auto", extent=extent, cmap="viridis")
        fooled_points = int((~correct).sum())
        heat.set_xlabel(f"t{shown} (pixels)")
        heat.set_ylabel("angle (degrees)")
        g_angle, g_tx, g_ty = (float(v) for v in landscape.grid_worst_params[row])
        g_loss = float(landscape.grid_worst_loss[row])
        g_other = g_ty if shown == "x" else g_tx
        heading = f"cross-entropy, {slice_name} (fooled at {fooled_points} of {correct.numel()} points)"
        if g_other == 0.0:
            g_shown = float(landscape.grid_worst_params[row, column])
            heat.plot([g_shown], [g_angle], marker="*", markersize=12, color="white", markeredgecolor="black")
            heading += f"\n* worst of the whole grid (loss {g_loss:.3f}) lies on this slice"
        else:
            heading += (
                f"\nworst of the whole grid, off this slice: {g_angle:+.0f} deg, "
                f"({g_tx:+.1f}, {g_ty:+.1f}) px, loss {g_loss:.3f}"
            )
        heat.set_title(heading, fontsize=8)
        figure.colorbar(mesh, ax=heat)
    if title:
        figure.suptitle(title)
    return _save(figure, path)
