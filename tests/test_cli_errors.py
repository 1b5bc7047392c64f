"""``advspatial evaluate``: every user mistake ends with exit status 2 and exactly one line on stderr.

The table runs the command in-process (``advspatial.cli.main.main``) from a user's folder; one test
runs a real process to show that a ``matplotlib.py`` in that folder never replaces the library's.
"""

from __future__ import annotations

import json
import struct
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tests.processes import run_python

from advspatial.cli.main import main

FACTORIES = """
import torch
from torch import nn


class TupleNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = make()

    def forward(self, x):
        return self.inner(x), x


def _net(channels, classes):
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(channels, 4, 3, padding=1), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, classes)
    )


def make():
    return _net(3, 2)


def make_gray():
    return _net(1, 2)


def make_flat():
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 2))


def make_tuple():
    return TupleNet()


def needs_args(num_classes, width=8):
    return _net(3, num_classes)


def raises():
    raise RuntimeError("the factory is broken\\nsee above")


def not_a_model():
    return {"weights": 1}


FORWARDS = []


def make_counted():
    model = make()
    model.register_forward_pre_hook(lambda module, inputs: FORWARDS.append(inputs[0].shape[0]))
    return model
"""

MODULES = ("user_models", "broken_syntax", "broken_import", "needs_dependency")


class Evil:
    """Pickled by reference to ``print``: a file ``torch.load(weights_only=True)`` must refuse."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("this ran",))


def _png_header(width: int, height: int) -> bytes:
    """A PNG signature, an IHDR chunk claiming ``width x height`` RGB pixels, and IEND: no pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def _images(folder: Path, classes: tuple[str, ...] = ("circle", "square"), size: int = 8) -> None:
    rng = np.random.default_rng(0)
    for name in classes:
        (folder / name).mkdir(parents=True)
        for index in range(2):
            pixels = (rng.random((size, size, 3)) * 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / name / f"{index}.png")


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A user's folder (the working folder during the test): factories, weights, image folders."""
    (tmp_path / "user_models.py").write_text(FACTORIES)
    (tmp_path / "broken_syntax.py").write_text("def make(:\n    pass\n")
    (tmp_path / "broken_import.py").write_text("raise ValueError('module-level failure')\n")
    (tmp_path / "needs_dependency.py").write_text("import advspatial_no_such_dependency\n")
    namespace: dict[str, object] = {}
    exec(FACTORIES, namespace)
    make = namespace["make"]
    assert callable(make)
    torch.save(make().state_dict(), tmp_path / "weights.pt")
    torch.save({"a": Evil()}, tmp_path / "unsafe.pt")
    (tmp_path / "corrupt.pt").write_bytes(b"not a checkpoint" * 4)
    (tmp_path / "taken.txt").write_text("keep me\n")
    _images(tmp_path / "images")
    _images(tmp_path / "three", classes=("a", "b", "c"))
    _images(tmp_path / "tiny", size=1)
    _images(tmp_path / "mixed")
    Image.new("RGB", (10, 9)).save(tmp_path / "mixed" / "square" / "z.png")
    for name, content in (
        ("empty", b""),
        ("corrupt", b"this is not a png" * 8),
        ("bomb", _png_header(100_000, 100_000)),
    ):
        _images(tmp_path / name)
        (tmp_path / name / "circle" / "z.png").write_bytes(content)
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    for module in MODULES:
        sys.modules.pop(module, None)


BASE = ["--model", "user_models:make", "--weights", "weights.pt", "--image-folder", "images", "--no-progress"]


def _replace(args: list[str], option: str, value: str) -> list[str]:
    args = list(args)
    args[args.index(option) + 1] = value
    return args


def _without(args: list[str], option: str) -> list[str]:
    index = args.index(option)
    return args[:index] + args[index + 2 :]


# (id, arguments after "evaluate", text the one line on stderr must contain)
CASES: list[tuple[str, list[str], str]] = [
    ("zero-byte image", _replace(BASE, "--image-folder", "empty"), "cannot read image empty/circle/z.png"),
    ("corrupt image", _replace(BASE, "--image-folder", "corrupt"), "cannot read image corrupt/circle/z.png"),
    ("decompression bomb", _replace(BASE, "--image-folder", "bomb"), "DecompressionBombError"),
    ("1x1 images", _replace(BASE, "--image-folder", "tiny"), "too small to rotate or shift; pass --resize"),
    ("images of two sizes", _replace(BASE, "--image-folder", "mixed"), "the images differ in size"),
    (
        "factory raises",
        _replace(BASE, "--model", "user_models:raises"),
        "raised RuntimeError: the factory is broken",
    ),
    ("syntax error", _replace(BASE, "--model", "broken_syntax:make"), "syntax error in"),
    ("module raises", _replace(BASE, "--model", "broken_import:make"), "ValueError: module-level failure"),
    (
        "module lacks a dependency",
        _replace(BASE, "--model", "needs_dependency:make"),
        "importing 'needs_dependency' failed: ModuleNotFoundError",
    ),
    (
        "no such module",
        _replace(BASE, "--model", "no_such_module:make"),
        "cannot import module 'no_such_module'",
    ),
    ("no such factory", _replace(BASE, "--model", "user_models:nothing"), "has no attribute 'nothing'"),
    (
        "bad --model",
        _replace(BASE, "--model", "user_models"),
        "--model must look like package.module:factory",
    ),
    (
        "factory needs arguments",
        _replace(BASE, "--model", "user_models:needs_args"),
        "needs arguments (num_classes)",
    ),
    (
        "factory returns no module",
        _replace(BASE, "--model", "user_models:not_a_model"),
        "expected a torch.nn.Module",
    ),
    (
        "model returns a tuple",
        [*_without(_replace(BASE, "--model", "user_models:make_tuple"), "--weights"), "--random-weights"],
        "must return logits",
    ),
    (
        "more classes than outputs",
        _replace(BASE, "--image-folder", "three"),
        "3 classes but the model has 2 outputs",
    ),
    (
        "grayscale model on RGB images",
        [*_without(_replace(BASE, "--model", "user_models:make_gray"), "--weights"), "--random-weights"],
        "pass --grayscale",
    ),
    ("RGB model on grayscale images", [*BASE, "--grayscale"], "drop --grayscale"),
    (
        "wrong image size",
        [
            *_without(_replace(BASE, "--model", "user_models:make_flat"), "--weights"),
            "--random-weights",
            "--resize",
            "9",
        ],
        "--resize",
    ),
    ("output is a file", [*BASE, "--output", "taken.txt"], "--output: taken.txt is a file"),
    (
        "output under a file",
        [*BASE, "--output", "taken.txt/report"],
        "so the folder taken.txt/report cannot be made",
    ),
    (
        "unsafe weights",
        _replace(BASE, "--weights", "unsafe.pt"),
        "torch.load(file, weights_only=False) and re-save",
    ),
    ("corrupt weights", _replace(BASE, "--weights", "corrupt.pt"), "is not a file written by torch.save"),
    (
        "missing weights file",
        _replace(BASE, "--weights", "missing.pt"),
        "--weights: file not found: missing.pt",
    ),
    ("forgotten --weights", _without(BASE, "--weights"), "--weights is required"),
    ("--weights and --random-weights", [*BASE, "--random-weights"], "exclude each other"),
    ("rotation beyond 180", [*BASE, "--max-rotation", "720"], "--max-rotation must be in [0, 180]"),
    ("rotation not finite", [*BASE, "--max-rotation", "nan"], "--max-rotation must be in [0, 180]"),
    ("negative translation", [*BASE, "--max-translation", "-1"], "--max-translation must be a finite number"),
    (
        "translation beyond the image",
        [*BASE, "--max-translation", "1000"],
        "larger than the images (8 x 8 px)",
    ),
    ("huge k", [*BASE, "--k", str(10**11)], "--k must be <= 1048576"),
    ("huge grid", [*BASE, "--grid-rotations", "100000", "--grid-translations", "101"], "--grid-rotations x"),
    (
        "folder without images",
        _replace(BASE, "--image-folder", "taken.txt"),
        "--image-folder: folder not found",
    ),
    ("dataset not on disk", [*_without(BASE, "--image-folder"), "--dataset", "CIFAR10"], "never downloads"),
    ("forgotten --model", _without(BASE, "--model"), "the following arguments are required: --model"),
    ("k of 0", [*BASE, "--k", "0"], "argument --k: expected an integer >= 1, got '0'"),
    ("rotation not a number", [*BASE, "--max-rotation", "thirty"], "argument --max-rotation: invalid float"),
    ("unknown option", [*BASE, "--max-rotations", "30"], "unrecognized arguments: --max-rotations"),
]


def _run(args: list[str]) -> int:
    """``advspatial args`` in this process; argparse's own mistakes end in ``SystemExit``."""
    try:
        return main(args)
    except SystemExit as stop:
        return int(stop.code or 0)


@pytest.mark.parametrize(("args", "message"), [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_a_user_mistake_exits_2_with_one_line(
    workspace: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    code = _run(["evaluate", *args])
    captured = capsys.readouterr()
    assert code == 2, captured.err
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(("advspatial evaluate: error: ", "advspatial: error: "))
    assert message in lines[0], lines[0]
    assert captured.out == ""
    assert not (workspace / "advspatial-report").exists()  # refused before anything was written
    assert (workspace / "taken.txt").read_text() == "keep me\n"
    assert not (workspace / "report").exists()


def test_the_table_lists_every_mistake_of_the_issue() -> None:
    assert len(CASES) == 38


def _truncate(path: Path) -> None:
    """Keep the first half of the file's bytes: the header still reads, the pixel data is cut."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_a_truncated_image_is_refused_before_the_model_runs(
    workspace: Path, capsys: pytest.CaptureFixture[str], suffix: str
) -> None:
    _images(workspace / "cut", size=64)  # 64 x 64: the first half of the JPEG holds its whole header
    pixels = (np.random.default_rng(1).random((64, 64, 3)) * 255).astype(np.uint8)
    path = workspace / "cut" / "square" / f"z{suffix}"  # the last image: the sweep would reach it last
    Image.fromarray(pixels).save(path)
    _truncate(path)
    with Image.open(path) as image:
        assert image.size == (64, 64)  # only decoding the data finds the cut
    args = _replace(_replace(BASE, "--image-folder", "cut"), "--model", "user_models:make_counted")
    code = _run(["evaluate", *args])
    captured = capsys.readouterr()
    assert code == 2, captured.err
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert f"cannot read image cut/square/z{suffix}: OSError: image file is truncated" in lines[0], lines[0]
    forwards = sys.modules["user_models"].FORWARDS
    assert forwards == []  # refused before any forward pass of the model
    sys.modules["user_models"].make_counted()(torch.zeros(1, 3, 8, 8))
    assert forwards == [1]  # the counter counts
    assert not (workspace / "advspatial-report").exists()


def test_the_working_folder_is_searched_last_and_only_for_the_factory(workspace: Path) -> None:
    (workspace / "shadow_probe_module.py").write_text("VALUE = 1\n")
    seen: list[list[str]] = []
    (workspace / "path_probe.py").write_text(
        "import sys\nfrom user_models import make\nPATH = list(sys.path)\n"
    )
    from advspatial.cli.evaluate import load_factory_model

    try:
        load_factory_model("path_probe:make")
        seen.append(sys.modules["path_probe"].PATH)
    finally:
        sys.modules.pop("path_probe", None)
    assert seen[0][-1] == str(workspace) and str(workspace) not in seen[0][:-1]
    assert str(workspace) not in sys.path
    with pytest.raises(ModuleNotFoundError):
        __import__("shadow_probe_module")


SHADOW = "raise SystemExit('the matplotlib.py of the working folder was imported')\n"


def test_a_matplotlib_py_in_the_working_folder_is_never_imported(workspace: Path) -> None:
    """A real process started like the console script (``python -P``: no folder added at start-up)."""
    (workspace / "matplotlib.py").write_text(SHADOW)
    (workspace / "tqdm.py").write_text(SHADOW)
    result = run_python(
        [
            "-P",
            "-m",
            "advspatial.cli.main",
            "evaluate",
            *_without(BASE, "--weights"),
            "--random-weights",
            "--grid-rotations",
            "3",
            "--grid-translations",
            "1",
            "--pgd-steps",
            "1",
            "--k",
            "2",
            "--landscape-images",
            "1",
            "--max-translation",
            "2",
            "--device",
            "cpu",
        ],
        cwd=workspace,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((workspace / "advspatial-report" / "report.json").read_text())
    assert report["weights"] is None and report["data"]["images"] == 4
    assert (workspace / "advspatial-report" / "accuracy.png").stat().st_size > 1000


QUICK = [
    "--grid-rotations",
    "3",
    "--grid-translations",
    "1",
    "--pgd-steps",
    "1",
    "--k",
    "2",
    "--device",
    "cpu",
]


def test_random_weights_and_resize_run_and_the_report_survives_a_failing_plot(
    workspace: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """1 x 1 images are fine once resized; report.json is written before the plots are drawn."""
    import advspatial.cli.evaluate as evaluate

    def broken_plot(*args: object, **kwargs: object) -> Path:
        raise RuntimeError("the plot failed")

    monkeypatch.setattr(evaluate, "plot_accuracies", broken_plot)
    args = [
        *_without(_replace(BASE, "--image-folder", "tiny"), "--weights"),
        "--random-weights",
        "--resize",
        "8",
    ]
    with pytest.raises(RuntimeError, match="the plot failed"):
        main(["evaluate", *args, *QUICK, "--landscape-images", "0"])
    report = json.loads((workspace / "advspatial-report" / "report.json").read_text())
    assert report["weights"] is None and report["data"]["images"] == 4
    assert set(report["accuracy"]) == {"natural", "random", "worst_of_2", "grid", "first_order"}
    assert capsys.readouterr().err == ""


def test_a_missing_matplotlib_is_reported_before_computing(
    workspace: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a)
    )
    assert main(["evaluate", *BASE]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and "pip install 'advspatial[demo]'" in lines[0]
    assert not (workspace / "advspatial-report").exists()


def test_python_m_drops_the_working_folder_it_put_first(
    workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``python -m advspatial.cli.main`` (torchrun) starts with the folder first; lazy imports skip it."""
    from advspatial.cli.main import _drop_working_folder

    rest = [p for p in sys.path if p not in ("", str(workspace))]
    monkeypatch.setattr(sys, "path", [str(workspace), *rest])
    _drop_working_folder()
    assert sys.path == rest
    _drop_working_folder()  # a path that does not start with the working folder is left alone
    assert sys.path == rest


def test_the_model_check_follows_the_dtype_rule(workspace: Path) -> None:
    """A float64 model is scored on float32 images cast to its dtype, as the searches do: no refusal."""
    from advspatial.cli.evaluate import _check_model_fits, open_dataset
    from advspatial.cli.main import build_parser

    args = build_parser().parse_args(["evaluate", *BASE])
    dataset, info = open_dataset(args)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 2)).double()
    _check_model_fits(model, dataset, info, args)
