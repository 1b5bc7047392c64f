"""``advspatial evaluate``: measure the spatial robustness of a user's model; JSON report and plots.

The model comes from a factory (``--model package.module:factory``, found on the path or in the
current folder, which is searched after the installed modules and only while the factory is imported)
and its weights from a state dict saved with ``torch.save(model.state_dict(), file)``, loaded with
``torch.load(weights_only=True)``; ``--weights`` is required unless ``--random-weights`` is given.
The images come from an ``ImageFolder`` layout (``root/<class>/<image>``) or a torchvision dataset
already on disk (never downloaded); the model receives them as float ``(B, C, H, W)`` in
``[0, 1]`` (normalise inside the model).

Launched by ``torchrun --nproc_per_node N`` it starts a process group (gloo on CPU, NCCL on CUDA),
shards the accuracy sweep over the ranks (the same numbers as one process) and rank 0 computes the
rotation profile and the landscape and writes the report.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import inspect
import json
import math
import os
import pickle
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from advspatial import __version__
from advspatial.cli.progress import RemainingWork, say, with_pass_callback
from advspatial.cli.segmentation_folder import SegmentationFolder, check_segmentation_fit
from advspatial.distributed.context import (
    DistributedContext,
    barrier,
    distributed_session,
    launched_by_torchrun,
)
from advspatial.errors import MAX_CANDIDATES, AdvSpatialError, candidate_count, images_in_model_dtype
from advspatial.evaluation.landscape import loss_landscape
from advspatial.evaluation.plots import plot_accuracies
from advspatial.evaluation.rotation_profile import rotation_profile
from advspatial.evaluation.sweeps import affine_space, robustness_sweep
from advspatial.strategies.grid import default_steps
from advspatial.tasks import Classification, Segmentation, Task

__all__ = ["add_parser", "load_factory_model", "load_weights", "open_dataset", "stratified_indices"]

_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def _first_line(error: BaseException) -> str:
    """``Type: first line of the message`` of an exception, for a one-line report."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def _import_user_module(module_name: str) -> Any:
    """Import ``module_name``; the current folder is searched last, and only during this import.

    The folder is appended to ``sys.path`` (never put first) and removed afterwards, so a file in it
    named like an installed module (``matplotlib.py``) never replaces that module.
    """
    folder = os.getcwd()
    added = folder not in sys.path
    if added:
        sys.path.append(folder)
    importlib.invalidate_caches()
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name is not None and module_name.startswith(error.name):
            raise AdvSpatialError(
                f"--model: cannot import module {module_name!r} ({error}); run from the folder that holds it "
                "or add it to PYTHONPATH"
            ) from error
        raise AdvSpatialError(f"--model: importing {module_name!r} failed: {_first_line(error)}") from error
    except SyntaxError as error:
        raise AdvSpatialError(
            f"--model: cannot import module {module_name!r}: syntax error in {error.filename}, "
            f"line {error.lineno}: {error.msg}"
        ) from error
    except Exception as error:
        raise AdvSpatialError(f"--model: importing {module_name!r} failed: {_first_line(error)}") from error
    finally:
        if added and folder in sys.path:
            sys.path.remove(folder)


def _call_factory(factory: Any, spec: str) -> Any:
    """``factory()``, refusing a factory with required arguments and reporting its errors in one line."""
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):  # builtins without a signature: just call them
        parameters = []  # type: ignore[assignment]
    variadic = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    required = [p.name for p in parameters if p.default is inspect.Parameter.empty and p.kind not in variadic]
    if required:
        raise AdvSpatialError(
            f"--model: factory {spec} needs arguments ({', '.join(required)}); name a function that takes "
            "none, e.g. def build(): return MyNet(num_classes=10)"
        )
    try:
        return factory()
    except Exception as error:
        raise AdvSpatialError(f"--model: factory {spec} raised {_first_line(error)}") from error


def load_factory_model(spec: str) -> nn.Module:
    """Call the factory named by ``package.module:attribute`` and check it returns an ``nn.Module``."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise AdvSpatialError(f"--model must look like package.module:factory, got {spec!r}")
    module = _import_user_module(module_name)
    factory = getattr(module, attribute, None)
    if factory is None:
        where = getattr(module, "__file__", None)
        raise AdvSpatialError(
            f"--model: module {module_name!r} has no attribute {attribute!r}"
            + (f" (the module was imported from {where})" if where else "")
        )
    if not callable(factory):
        raise AdvSpatialError(f"--model: {spec} is a {type(factory).__name__}, expected a callable factory")
    model = _call_factory(factory, spec)
    if not isinstance(model, nn.Module):
        raise AdvSpatialError(
            f"--model: factory {spec} returned an object of type {type(model).__name__}, "
            "expected a torch.nn.Module"
        )
    return model


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load a state dict (or a checkpoint dict with a ``"state_dict"`` entry) into ``model``, strictly."""
    file = Path(path)
    if not file.is_file():
        raise AdvSpatialError(f"--weights: file not found: {file}")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
        if found is None:
            raise AdvSpatialError(
                f"--weights: {file} is not a file written by torch.save ({_first_line(error)[:120]}); "
                "save the weights with torch.save(model.state_dict(), file)"
            ) from error
        raise AdvSpatialError(
            f"--weights: {file} holds Python objects besides tensors ({found.group(1)}), which "
            "torch.load(weights_only=True) refuses to run; if you trust the file, load it in Python with "
            "torch.load(file, weights_only=False) and re-save torch.save(model.state_dict(), file)"
        ) from error
    except Exception as error:
        raise AdvSpatialError(
            f"--weights: {file} could not be loaded with torch.load(weights_only=True) "
            f"({_first_line(error)}); save the weights with torch.save(model.state_dict(), file)"
        ) from error
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise AdvSpatialError(
            f"--weights: {file} holds a {type(state).__name__}, expected a state dict of tensors "
            "(torch.save(model.state_dict(), file))"
        )
    expected = model.state_dict()
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    mismatched = [
        f"{key}: file {tuple(state[key].shape)} vs model {tuple(value.shape)}"
        for key, value in expected.items()
        if key in state and state[key].shape != value.shape
    ]
    if missing or unexpected or mismatched:
        parts = []
        for label, items in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape", mismatched),
        ):
            if items:
                shown = ", ".join(items[:5]) + (f" and {len(items) - 5} more" if len(items) > 5 else "")
                parts.append(f"{label}: {shown}")
        raise AdvSpatialError(f"--weights: {file} does not match the model ({'; '.join(parts)})")
    model.load_state_dict(state)


def _transform(resize: int | None, grayscale: bool) -> Any:
    from torchvision.transforms import v2

    steps: list[Any] = [v2.ToImage()]
    if grayscale:
        steps.append(v2.Grayscale(num_output_channels=1))
    if resize is not None:
        steps.append(v2.Resize((resize, resize), antialias=True))
    steps.append(v2.ToDtype(torch.float32, scale=True))
    return v2.Compose(steps)


def _read_image(path: str) -> Any:
    """ImageFolder's loader: the image as RGB, or an error naming the file that cannot be read."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except Exception as error:
        raise AdvSpatialError(f"--image-folder: cannot read image {path}: {_first_line(error)}") from error


def _check_image_files(paths: list[str], resize: int | None) -> None:
    """Decode every image before any work: unreadable, empty, truncated and oversized files are named.

    Each image is decoded in full (a valid header over cut-off data fails here, not mid-sweep). PIL
    refuses (``DecompressionBombError``) headers of more than twice ``Image.MAX_IMAGE_PIXELS``.
    Without ``--resize`` the images must be at least 2 x 2 px and all of one size.
    """
    from PIL import Image

    first: tuple[str, tuple[int, int]] | None = None
    for path in paths:
        try:
            with Image.open(path) as image:
                size = image.size
                image.load()
        except Exception as error:
            raise AdvSpatialError(
                f"--image-folder: cannot read image {path}: {_first_line(error)}"
            ) from error
        if resize is not None:
            continue
        if min(size) < 2:
            raise AdvSpatialError(
                f"--image-folder: image {path} is {size[0]} x {size[1]} px, too small to rotate or shift; "
                "pass --resize N to scale every image to N x N"
            )
        first = first or (path, size)
        if size != first[1]:
            raise AdvSpatialError(
                f"--image-folder: the images differ in size ({first[0]} is {first[1][0]} x {first[1][1]} px, "
                f"{path} is {size[0]} x {size[1]} px); pass --resize N to make them N x N"
            )


def open_dataset(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """The dataset named on the command line, and a description of it for the report."""
    try:
        import torchvision
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise AdvSpatialError(
            "advspatial evaluate needs torchvision: pip install 'advspatial[demo]'"
        ) from error
    transform = _transform(args.resize, args.grayscale)
    if args.image_folder is not None:
        root = Path(args.image_folder)
        if not root.is_dir():
            raise AdvSpatialError(f"--image-folder: folder not found: {root}")
        has_images = any(p.suffix.lower() in _IMAGE_SUFFIXES for p in root.glob("*/**/*") if p.is_file())
        if not has_images:
            raise AdvSpatialError(
                f"--image-folder: no images found in {root}; expected the ImageFolder layout "
                f"{root}/<class name>/<image>.png with one sub-folder per class"
            )
        try:
            dataset: Any = torchvision.datasets.ImageFolder(
                str(root), transform=transform, loader=_read_image
            )
        except (FileNotFoundError, OSError) as error:
            raise AdvSpatialError(f"--image-folder: {root} is not a readable ImageFolder: {error}") from error
        info: dict[str, Any] = {"source": "image_folder", "path": str(root), "classes": list(dataset.classes)}
    else:
        name = args.dataset
        factory: Any = getattr(torchvision.datasets, name, None)
        if not isinstance(factory, type) or not issubclass(factory, torch.utils.data.Dataset):
            raise AdvSpatialError(
                f"--dataset: torchvision.datasets has no dataset {name!r} (e.g. MNIST, CIFAR10)"
            )
        root = Path(args.root)
        if not root.is_dir():
            raise AdvSpatialError(f"--root: folder not found: {root}")
        build: Any = factory
        try:
            try:
                dataset = build(str(root), train=args.split == "train", download=False, transform=transform)
            except TypeError:
                dataset = build(str(root), split=args.split, download=False, transform=transform)
        except (RuntimeError, FileNotFoundError, OSError) as error:
            raise AdvSpatialError(
                f"--dataset: {name} not found under {root} ({error}); this command never downloads: "
                f"fetch it first, e.g. torchvision.datasets.{name}(root, download=True)"
            ) from error
        info = {"source": "torchvision", "dataset": name, "path": str(root), "split": args.split}
    if args.limit is not None and args.limit < len(dataset):
        dataset = Subset(dataset, stratified_indices(_targets(dataset), args.limit))
    if args.image_folder is not None:  # the images that will be used, before any work
        folder: Any = dataset.dataset if isinstance(dataset, Subset) else dataset
        used = dataset.indices if isinstance(dataset, Subset) else None
        samples = folder.samples if used is None else [folder.samples[i] for i in used]
        _check_image_files([path for path, _ in samples], args.resize)
    if len(dataset) == 0:
        raise AdvSpatialError("the dataset holds no images")
    info["images"] = len(dataset)
    return dataset, info


def stratified_indices(labels: Sequence[int], count: int) -> list[int]:
    """``count`` indices into ``labels`` with every class in proportion to its size, deterministically.

    The indices are sorted by class (stably), ``count`` evenly spaced positions are taken from that
    order, and the result is returned in dataset order. Each class gets its share of ``count`` to
    within one image, spread over the class rather than its first images; with fewer picks than
    classes, the smaller classes may get none.

    Example:
        >>> stratified_indices([0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2], 6)
        [1, 3, 5, 7, 9, 11]
        >>> stratified_indices([0, 1, 0, 1, 0, 1], 2)
        [2, 3]
    """
    order = sorted(range(len(labels)), key=lambda index: int(labels[index]))
    count = min(count, len(order))
    return sorted(order[(2 * i + 1) * len(order) // (2 * count)] for i in range(count))


def _targets(dataset: Any) -> Sequence[int]:
    """The dataset's class per item (``targets`` of ImageFolder, MNIST, CIFAR), without decoding images.

    A dataset without a ``targets`` list of its length counts as one class, so ``--limit`` takes
    evenly spaced images from it.
    """
    targets = getattr(dataset, "targets", None)
    if isinstance(targets, torch.Tensor):
        targets = targets.tolist()
    if isinstance(targets, Sequence) and len(targets) == len(dataset):
        return targets
    return [0] * len(dataset)


def _count(minimum: int) -> Any:
    """An argparse type: an integer >= ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}")
        return value

    return parse


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise AdvSpatialError(f"--device must be cpu, cuda, cuda:N or auto, got {name!r}") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise AdvSpatialError(f"--device {name}: CUDA is not available on this machine; use --device cpu")
    return device


def _check_arguments(args: argparse.Namespace) -> None:
    """Refuse contradictory or absurd options before anything is loaded or computed."""
    if args.weights is None and not args.random_weights:
        raise AdvSpatialError(
            "--weights is required (a state dict file: torch.save(model.state_dict(), file)); pass "
            "--random-weights to evaluate the factory's freshly initialised model on purpose"
        )
    if args.task == "segmentation" and (args.image_folder is None or args.mask_folder is None):
        raise AdvSpatialError(
            "--task segmentation needs --image-folder (the images) and --mask-folder (a <name>.png mask "
            "of class indices per image)"
        )
    if args.mask_folder is not None and args.task != "segmentation":
        raise AdvSpatialError("--mask-folder is read with --task segmentation only")
    if not 0.0 <= args.min_pixel_accuracy <= 1.0:
        raise AdvSpatialError(f"--min-pixel-accuracy must be in [0, 1], got {args.min_pixel_accuracy:g}")
    if args.weights is not None and args.random_weights:
        raise AdvSpatialError("--weights and --random-weights exclude each other; pass one of them")
    if not math.isfinite(args.max_rotation) or not 0.0 <= args.max_rotation <= 180.0:
        raise AdvSpatialError(
            f"--max-rotation must be in [0, 180] degrees (the range is [-r, r]; beyond 180 the angles "
            f"repeat), got {args.max_rotation:g}"
        )
    if not math.isfinite(args.max_translation) or args.max_translation < 0.0:
        raise AdvSpatialError(
            f"--max-translation must be a finite number of pixels >= 0, got {args.max_translation:g}"
        )
    candidate_count(args.k, "--k")
    affine = _affine_steps(args)
    points = args.grid_rotations * args.grid_translations**2 * math.prod(affine)
    if points > MAX_CANDIDATES:
        extra = "".join(f" x {n}" for n in affine)
        raise AdvSpatialError(
            f"--grid-rotations x --grid-translations^2 must be <= {MAX_CANDIDATES} grid points, got "
            f"{args.grid_rotations} x {args.grid_translations}^2{extra} = {points}"
        )
    _check_output(Path(args.output))
    if importlib.util.find_spec("matplotlib") is None:
        raise AdvSpatialError(
            "advspatial evaluate draws its plots with matplotlib: pip install 'advspatial[demo]'"
        )


def _affine_steps(args: argparse.Namespace) -> tuple[int, ...]:
    """Grid points per scale / shear axis for ``--scale`` / ``--shear`` (3 per axis with a range)."""
    try:
        box = affine_space(args.max_rotation, args.max_translation, tuple(args.scale), args.shear)
    except AdvSpatialError as error:
        raise AdvSpatialError(f"--{error}") from error
    return () if box is None else default_steps(box)[3:]


def _check_output(output: Path) -> None:
    """``--output`` must be a folder that exists or can be made: checked before the sweep, not after."""
    if output.exists() and not output.is_dir():
        raise AdvSpatialError(
            f"--output: {output} is a file; name a folder (report.json and the plots are written into it)"
        )
    ancestor = output
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise AdvSpatialError(f"--output: {ancestor} is a file, so the folder {output} cannot be made")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise AdvSpatialError(f"--output: cannot write in {ancestor}; choose a folder you can write to")


def _channel_hint(text: str, args: argparse.Namespace) -> str:
    found = re.search(r"to have (\d+) channels, but got (\d+) channels", text)
    if found is None:
        return ""
    expected, got = int(found.group(1)), int(found.group(2))
    if expected == 1 and got == 3:
        return "; the model expects 1 channel and the images have 3: pass --grayscale"
    if args.grayscale:
        return f"; the model expects {expected} channels and --grayscale gives 1: drop --grayscale"
    return f"; the model expects {expected} channels and the images have {got}"


def _task(args: argparse.Namespace) -> Task:
    if args.task == "segmentation":
        return Segmentation(ignore_index=args.ignore_index, min_pixel_accuracy=args.min_pixel_accuracy)
    return Classification()


def _open_segmentation(args: argparse.Namespace) -> tuple[SegmentationFolder, dict[str, Any]]:
    """The ``--image-folder`` / ``--mask-folder`` pairs (``--limit``: evenly spaced, deterministic)."""
    dataset = SegmentationFolder(
        Path(args.image_folder),
        Path(args.mask_folder),
        _transform(args.resize, args.grayscale),
        args.resize,
        _IMAGE_SUFFIXES,
        limit=args.limit,
    )
    info = {
        "source": "segmentation_folders",
        "path": str(args.image_folder),
        "masks": str(args.mask_folder),
        "images": len(dataset),
    }
    return dataset, info


def _check_model_fits(model: nn.Module, dataset: Any, info: dict[str, Any], args: argparse.Namespace) -> None:
    """Score one image before the sweep: channels, size, output shape and the number of classes."""
    image = dataset[0][0]
    height, width = int(image.shape[-2]), int(image.shape[-1])
    if args.max_translation > min(height, width):
        raise AdvSpatialError(
            f"--max-translation {args.max_translation:g} px is larger than the images "
            f"({height} x {width} px): the shifts would move them out of the frame; "
            f"use at most {min(height, width)}"
        )
    device = next((t.device for t in (*model.parameters(), *model.buffers())), torch.device("cpu"))
    batch = images_in_model_dtype(image.unsqueeze(0).to(device), model)  # the library's dtype rule
    try:
        with torch.inference_mode():
            logits = model(batch)
    except Exception as error:
        text = _first_line(error)
        hint = _channel_hint(text, args) or "; check --resize N and --grayscale against the model's input"
        raise AdvSpatialError(
            f"the model fails on the images (one image of shape {tuple(batch.shape)}): {text}{hint}"
        ) from error
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2 or logits.shape[0] != 1:
        got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise AdvSpatialError(
            f"--model: the model must return logits of shape (batch, num_classes), got {got} for one image"
        )
    classes = info.get("classes") or getattr(getattr(dataset, "dataset", dataset), "classes", None)
    if classes is not None and len(classes) > logits.shape[1]:
        source = "--image-folder" if info.get("source") == "image_folder" else "--dataset"
        raise AdvSpatialError(
            f"{source} has {len(classes)} classes but the model has {logits.shape[1]} outputs; "
            "each class (a sub-folder, in sorted order) needs an output of the model"
        )


def _main(args: argparse.Namespace) -> int:
    _check_arguments(args)
    if not launched_by_torchrun():
        return _evaluate(args, _device(args.device), None)
    # Under torchrun: gloo on CPU, NCCL on CUDA; the sweeps shard themselves, rank 0 writes the report.
    with distributed_session(device=None if args.device == "auto" else _device(args.device)) as context:
        code = _evaluate(args, context.device, context)
        barrier()
    return code


def _evaluate(args: argparse.Namespace, device: torch.device, context: DistributedContext | None) -> int:
    start = time.perf_counter()
    model = load_factory_model(args.model)
    if args.weights is not None:
        load_weights(model, args.weights)
    model.to(device).eval()
    task = _task(args)
    if isinstance(task, Segmentation):
        dataset, data_info = _open_segmentation(args)
        check_segmentation_fit(model, dataset, task)
    else:
        dataset, data_info = open_dataset(args)
        _check_model_fits(model, dataset, data_info, args)
    loader: Any = DataLoader(dataset, batch_size=args.batch_size, shuffle=False)
    progress = not args.no_progress
    if progress and context is None:
        loader = _with_estimates(loader, args, len(dataset))
    affine = _affine_steps(args)
    space = {"max_rotation": args.max_rotation, "max_translation": args.max_translation}
    sweep = {
        "k": args.k,
        "rotations": args.grid_rotations,
        "translations": args.grid_translations,
        "pgd_steps": args.pgd_steps,
        "seed": args.seed,
        "progress": progress,
        "scale": tuple(args.scale),
        "shear": args.shear,
        **space,
    }
    try:  # under torchrun each call shards the data and returns the whole result on every rank
        results = robustness_sweep(model, loader, task=task, **sweep)
        # The rotation profile and the landscape are classification metrics (predicted classes).
        profile = (
            rotation_profile(model, loader, max_rotation=args.max_rotation, progress=progress)
            if isinstance(task, Classification)
            else None
        )
        if context is not None and not context.is_main:
            return 0
    except RuntimeError as error:
        if "stack expects each tensor to be equal size" in str(error):
            raise AdvSpatialError("the images differ in size; pass --resize N to make them N x N") from error
        raise
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    count = min(args.landscape_images, len(dataset)) if profile is not None else 0
    planned = ["accuracy", "grid_transforms"]
    planned += (["rotation_profile"] if profile is not None else []) + (["landscape"] if count > 0 else [])
    report = {
        "advspatial_version": __version__,
        "model": args.model,
        "weights": args.weights,
        "device": str(device),
        "world_size": 1 if context is None else context.world_size,
        "data": data_info,
        "attack_space": {
            **space,
            "k": args.k,
            "scale": list(args.scale),
            "shear": args.shear,
            "grid": [args.grid_rotations, args.grid_translations, args.grid_translations, *affine],
            "pgd_steps": args.pgd_steps,
            "seed": args.seed,
        },
        "task": repr(task),
        "accuracy": {name: result.to_dict(per_sample=False)["accuracy"] for name, result in results.items()},
        "metrics": {name: result.to_dict(per_sample=False)["metrics"] for name, result in results.items()},
        "results": {name: result.to_dict() for name, result in results.items()},
        **({"labels": results["natural"].labels.tolist()} if profile is not None else {}),
        **({"rotation_profile": profile.to_dict()} if profile is not None else {}),
        "plots": {name: f"{name}.png" for name in planned},
        "seconds": time.perf_counter() - start,
    }
    report_path = output / "report.json"  # written before the plots: a failing plot loses no numbers
    report_path.write_text(json.dumps(report, indent=2) + "\n")
    plots = {
        "accuracy": plot_accuracies(
            {args.model: {name: result.accuracy for name, result in results.items()}},
            output / "accuracy.png",
            title=f"+-{args.max_rotation:g} degrees, +-{args.max_translation:g} px"
            + (f", scale {args.scale[0]:g}-{args.scale[1]:g}, shear +-{args.shear:g}" if affine else ""),
        ),
        "grid_transforms": results["grid"].save_plot(output / "grid_transforms.png", model=args.model),
    }
    if profile is not None:
        plots["rotation_profile"] = profile.save_plot(output / "rotation_profile.png", label=args.model)
    if count > 0:
        images, labels = next(iter(DataLoader(dataset, batch_size=count, shuffle=False)))
        landscape = loss_landscape(model, images.to(device), labels.to(device), **space)
        classes = getattr(dataset, "classes", None)
        plots["landscape"] = landscape.save_plot(
            output / "landscape.png", model=args.model, class_names=classes
        )
    if isinstance(task, Segmentation):
        threshold = f"(robust: pixel accuracy >= {task.min_pixel_accuracy:g} on every candidate)"
        print(f"{'attack':<12} {'mIoU':>7} {'robust':>8}  {threshold}")
        for name, result in results.items():
            print(f"{name:<12} {100 * result.metrics['miou']:6.1f} % {100 * result.accuracy:6.1f} %")
    else:
        print(f"{'attack':<12} accuracy")
        for name, result in results.items():
            print(f"{name:<12} {100 * result.accuracy:6.1f} %")
    print(f"Report written to {report_path}; plots: {', '.join(p.name for p in plots.values())}")
    return 0


def _with_estimates(loader: DataLoader[Any], args: argparse.Namespace, images: int) -> Any:
    """Print the plan, then after each pass over ``loader`` the time spent and an estimate of what is left.

    The passes are those of ``robustness_sweep`` (natural, random, worst-of-k, grid, first-order, in
    this order) and of the rotation profile, weighted by forward evaluations per image. The grid's
    early exit makes its cost unknown in advance (one to all of its candidates per image): until it
    is done the estimate is a range, measured at the pace of the passes of known cost.
    """
    grid = args.grid_rotations * args.grid_translations**2
    pgd = 3 * args.pgd_steps + 1  # a forward and a backward pass per step, every iterate scored
    grid_name = f"grid {args.grid_rotations} x {args.grid_translations} x {args.grid_translations}"
    per_image: list[tuple[str, int, int]] = [  # (pass, least, most forward evaluations per image)
        ("natural", 1, 1),
        ("random", 1, 1),
        (f"worst-of-{args.k}", args.k, args.k),
        (grid_name, 1, grid),
        (f"first-order ({args.pgd_steps} steps)", pgd, pgd),
        ("rotation profile", 32, 32),  # 31 angles, each scored once, + the clean pass
    ][: 6 if args.task == "classification" else 5]  # no rotation profile for segmentation
    stages = [(name, float(images * least), float(images * most)) for name, least, most in per_image]
    work = RemainingWork(stages)
    least = sum(images * stage[1] for stage in per_image)
    most = sum(images * stage[2] for stage in per_image)
    names = ", ".join(stage[0] for stage in per_image)
    say(
        f"advspatial evaluate: {images} images, {len(stages)} passes ({names}): "
        f"{least}-{most} forward evaluations (the grid's early exit decides); "
        "a time estimate follows each pass",
        file=sys.stderr,
    )
    return with_pass_callback(loader, lambda: say(work.finish(), file=sys.stderr))


_EPILOG = """example:
  advspatial evaluate --model my_package.models:build --weights model.pt \\
      --image-folder data/val --resize 32 --output report/

The factory is called with no arguments (wrap one that needs arguments in a function or
functools.partial in your module); report.json and the plots go to --output."""


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``advspatial evaluate``."""
    parser = subparsers.add_parser(
        "evaluate",
        help="measure a model's spatial robustness on an image folder or a torchvision dataset",
        description=(__doc__ or "").replace("``", ""),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--model",
        required=True,
        metavar="MODULE:FACTORY",
        help="package.module:factory; factory() (no arguments) returns the nn.Module",
    )
    parser.add_argument(
        "--weights",
        metavar="FILE",
        help="state dict file (torch.save(model.state_dict(), file)); required unless --random-weights",
    )
    parser.add_argument(
        "--random-weights",
        action="store_true",
        help="evaluate the factory's model as initialised, without --weights (on purpose)",
    )
    data = parser.add_mutually_exclusive_group(required=True)
    data.add_argument(
        "--image-folder", metavar="FOLDER", help="folder in ImageFolder layout: <folder>/<class>/<image>"
    )
    data.add_argument(
        "--dataset", metavar="NAME", help="torchvision dataset class already on disk, e.g. MNIST, CIFAR10"
    )
    parser.add_argument("--root", default=".", metavar="FOLDER", help="root folder of --dataset (default .)")
    parser.add_argument(
        "--split", default="test", choices=["train", "test"], help="split of --dataset (default test)"
    )
    parser.add_argument("--resize", type=_count(1), metavar="N", help="resize images to N x N")
    parser.add_argument("--grayscale", action="store_true", help="convert images to one channel")
    parser.add_argument(
        "--limit",
        type=_count(1),
        metavar="N",
        help="evaluate N images only: a class-stratified subset, the same on every run",
    )
    parser.add_argument(
        "--max-rotation", type=float, metavar="DEGREES", default=30.0, help="degrees (default 30)"
    )
    parser.add_argument(
        "--max-translation", type=float, metavar="PIXELS", default=3.0, help="pixels (default 3)"
    )
    parser.add_argument(
        "--scale",
        type=float,
        nargs=2,
        default=[1.0, 1.0],
        metavar=("LOW", "HIGH"),
        help="zoom range, LOW <= 1 <= HIGH (default 1 1: none); with it or --shear the attacks search "
        "the affine box and the grid gets 3 points per scale / shear axis",
    )
    parser.add_argument(
        "--shear",
        type=float,
        metavar="DEGREES",
        default=0.0,
        help="shear half-width in degrees on both axes, <= 60 (default 0)",
    )
    parser.add_argument(
        "--task",
        choices=("classification", "segmentation"),
        default="classification",
        help="what the model predicts (default classification); segmentation reads --mask-folder",
    )
    parser.add_argument(
        "--mask-folder",
        metavar="FOLDER",
        help="with --task segmentation: <image name>.png masks of class indices, one per image",
    )
    parser.add_argument(
        "--ignore-index", type=int, default=255, help="mask value that is not scored (default 255)"
    )
    parser.add_argument(
        "--min-pixel-accuracy",
        type=float,
        default=0.9,
        help="segmentation: a transformed image counts as right at this pixel accuracy (default 0.9)",
    )
    parser.add_argument("--k", type=_count(1), default=10, help="candidates of worst-of-k (default 10)")
    parser.add_argument(
        "--grid-rotations", type=_count(1), metavar="N", default=31, help="grid angles (default 31)"
    )
    parser.add_argument(
        "--grid-translations",
        type=_count(1),
        metavar="N",
        default=5,
        help="grid offsets per axis (default 5)",
    )
    parser.add_argument(
        "--pgd-steps",
        type=_count(0),
        metavar="N",
        default=5,
        help="steps of the first-order attack (default 5)",
    )
    parser.add_argument(
        "--landscape-images",
        type=_count(0),
        metavar="N",
        default=3,
        help="images in landscape.png (default 3)",
    )
    parser.add_argument(
        "--batch-size", type=_count(1), default=128, metavar="N", help="images per batch (default 128)"
    )
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    parser.add_argument(
        "--seed", type=int, metavar="N", default=0, help="seed of the random draws (default 0)"
    )
    parser.add_argument(
        "--output",
        default="advspatial-report",
        metavar="FOLDER",
        help="folder for report.json and the plots (default ./advspatial-report)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars and no time estimates")
    parser.set_defaults(handler=_main)
