"""Every ```python block of README.md and docs/ (guides, API pages, index) runs: the how-tos cannot rot.

How a page's blocks run:

- In order, in one namespace per page (a later block may use what an earlier one defined), in a
  temporary working folder, with warnings as errors (as the rest of the suite).
- The namespace starts from the tiny setup of :func:`tiny_setup`: ``torch``, ``nn``, ``F``, a tiny
  CNN ``model`` (and its factory ``make_model``) for ``(B, 3, 16, 16)`` images and 10 classes on the
  CPU (``device``), a batch ``images`` / ``labels`` of 4, a ``loader`` of that one batch
  (``train``, ``train_set``, ``test_set`` are its dataset), ``criterion``, ``optimizer``,
  ``epochs = 2``, one ``image`` ``(1, 3, 16, 16)`` with ``mask``, ``boxes``, ``points``, ``H``,
  ``W``, one ``img`` ``(3, 16, 16)`` with ``angle``, ``tx``, ``ty``, and a ``logger`` with a
  ``log(dict)`` method. Blocks import what they use from advspatial themselves.
- A page can add hidden setup code with an HTML comment right before a block (invisible in the
  built docs)::

      <!-- docs-test-setup
      pil_image = ...
      -->

- A block that cannot run here (it needs a GPU, torchrun, the network or hours) is marked with
  ``<!-- no-run: the reason -->`` on the line right before it. The marked blocks are counted and
  listed by :func:`test_blocks_that_do_not_run_are_few_and_explained`; keep that list short.
- A block written as a doctest (``>>>`` prompts) is checked as a doctest: its outputs must match.
"""

from __future__ import annotations

import doctest
import gc
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
PAGES = [
    ROOT / "README.md",
    ROOT / "docs" / "index.md",
    *sorted((ROOT / "docs" / "guides").glob("*.md")),
    *sorted((ROOT / "docs" / "api").glob("*.md")),
]
MAX_NOT_RUN = 6  # blocks marked <!-- no-run: ... --> over all pages

_FENCE = re.compile(r"^(?P<indent> *)```(?P<info>[^\n`]*)\n(?P<body>.*?)^(?P=indent)```[ \t]*$", re.S | re.M)
_NO_RUN = re.compile(r"<!--\s*no-run:\s*(?P<reason>.*?)\s*-->", re.S)
_SETUP = re.compile(r"<!--\s*docs-test-setup\s*\n(?P<code>.*?)-->", re.S)


@dataclass(frozen=True)
class Block:
    """One fenced ```python block of a page."""

    page: Path
    line: int
    code: str
    setup: str  # hidden setup code to run first ("" if none)
    no_run: str | None  # the reason, when marked <!-- no-run: reason -->

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def python_blocks(page: Path) -> list[Block]:
    """The page's ```python (or ```py) blocks, with the marker or hidden setup right before each."""
    text = page.read_text(encoding="utf-8")
    blocks = []
    for match in _FENCE.finditer(text):
        language = match["info"].strip().split(" ")[0].lower() if match["info"].strip() else ""
        if language not in ("python", "py", "python3", "pycon"):
            continue
        before = text[: match.start()].rstrip()
        comment = before[before.rfind("<!--") :] if before.endswith("-->") else ""  # right before
        no_run, setup = _NO_RUN.fullmatch(comment), _SETUP.fullmatch(comment)
        blocks.append(
            Block(
                page=page,
                line=text.count("\n", 0, match.start()) + 1,
                code=_dedent(match["body"], len(match["indent"])),
                setup=setup["code"] if setup else "",
                no_run=no_run["reason"] if no_run else None,
            )
        )
    return blocks


def _dedent(body: str, indent: int) -> str:
    return "\n".join(line[indent:] if line[:indent].isspace() else line for line in body.splitlines())


class _Logger:
    """Stands in for a user's experiment logger."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def log(self, record: dict[str, Any]) -> None:
        self.records.append(dict(record))


def tiny_setup() -> dict[str, Any]:
    """The names every block may use without defining them (see the module docstring)."""
    from torch import nn
    from torch.nn import functional
    from torch.utils.data import DataLoader, TensorDataset

    def make_model() -> nn.Module:
        return nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1),
            nn.BatchNorm2d(4),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(4, 10),
        )

    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = make_model()
    data = TensorDataset(torch.rand(4, 3, 16, 16, generator=generator), torch.arange(4))
    images, labels = data.tensors[0].clone(), data.tensors[1].clone()
    mask = torch.zeros(1, 16, 16, dtype=torch.long)
    mask[:, 4:12, 4:12] = 1
    return {
        "torch": torch,
        "nn": nn,
        "F": functional,
        "device": torch.device("cpu"),
        "model": model,
        "make_model": make_model,
        "images": images,
        "labels": labels,
        "loader": DataLoader(data, batch_size=4),
        "train": data,
        "train_set": data,
        "test_set": data,
        "criterion": nn.CrossEntropyLoss(),
        "optimizer": torch.optim.SGD(model.parameters(), lr=0.01),
        "epochs": 2,
        "image": images[:1].clone(),
        "mask": mask,
        "boxes": torch.tensor([[[2.0, 2.0, 10.0, 12.0]]]),
        "points": torch.tensor([[[8.0, 8.0], [4.5, 8.5]]]),
        "H": 16,
        "W": 16,
        "img": images[0].clone(),
        "angle": 15.0,
        "tx": 2.0,
        "ty": -1.0,
        "logger": _Logger(),
    }


def _run(block: Block, namespace: dict[str, Any]) -> None:
    if block.setup:
        exec(compile(block.setup, f"{block.where} (hidden setup)", "exec"), namespace)
    if block.code.lstrip().startswith(">>>"):
        test = doctest.DocTestParser().get_doctest(
            block.code, namespace, block.where, str(block.page), block.line
        )
        runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
        runner.run(test, out=lambda text: None)
        assert runner.failures == 0, f"{block.where}: the doctest's output differs"
        return
    exec(compile(block.code, block.where, "exec"), namespace)


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_the_python_blocks_of_a_page_run(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    namespace = tiny_setup()
    for block in python_blocks(page):
        if block.no_run is not None:
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                # about this host, not the docs: its core count (num_workers=8 on 2 cores), and
                # Lightning's note that tensorboard is not installed
                warnings.filterwarnings("ignore", "This DataLoader will create", UserWarning)
                warnings.filterwarnings("ignore", ".*tensorboardX.*", UserWarning)
                _run(block, namespace)
        except Exception as error:
            code = "\n".join(f"    {line}" for line in block.code.splitlines())
            pytest.fail(f"the block at {block.where} raised {type(error).__name__}: {error}\n{code}")
    namespace.clear()  # shut down this page's DataLoader workers now, not in a later page's time
    gc.collect()


def test_blocks_that_do_not_run_are_few_and_explained() -> None:
    marked = [block for page in PAGES for block in python_blocks(page) if block.no_run is not None]
    listing = "\n".join(f"  {block.where}: {block.no_run}" for block in marked)
    print(f"\n{len(marked)} documentation block(s) marked no-run:\n{listing}")
    assert all(block.no_run for block in marked), f"a no-run marker without a reason:\n{listing}"
    assert len(marked) <= MAX_NOT_RUN, (
        f"too many blocks do not run ({len(marked)} > {MAX_NOT_RUN}):\n{listing}"
    )


def test_the_parser_finds_blocks_markers_and_setup(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "Text\n\n```python\nx = 1\n```\n\n<!-- no-run: needs a GPU -->\n```python\nx.cuda()\n```\n\n"
        "<!-- docs-test-setup\ny = 2\n-->\n```py\nassert y == 2\n```\n\n```bash\nls\n```\n\n"
        "- item\n\n  ```python\n  z = 3\n  ```\n\n"
        '!!! note "in an admonition"\n    ```python\n    if True:\n        w = 4\n    ```\n'
    )
    found = [(b.code.strip(), b.no_run, b.setup.strip()) for b in python_blocks(page)]
    assert found == [
        ("x = 1", None, ""),
        ("x.cuda()", "needs a GPU", ""),
        ("assert y == 2", None, "y = 2"),
        ("z = 3", None, ""),
        ("if True:\n    w = 4", None, ""),
    ]
