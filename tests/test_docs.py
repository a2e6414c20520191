"""The documentation runs: every docstring example (doctest) and every Python block of the
tutorials, in order, as a reader would paste them."""

import doctest
import importlib
import pkgutil
import re
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bayesshape as bs

from .conftest import shared

DOCS = Path(__file__).resolve().parents[1] / "docs"
MODULES = sorted(m.name for m in pkgutil.walk_packages(bs.__path__, "bayesshape.") if not m.name.endswith("__main__"))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(
        module,
        extraglobs={"bs": bs, "np": np, "jnp": jnp, "jax": jax},
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
        report=True,
        verbose=False,
    )
    assert result.failed == 0, f"{result.failed} of {result.attempted} docstring examples of {name} failed"


def _blocks(page: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S)


def test_the_block_extractor_finds_code():
    blocks = _blocks(DOCS / "tutorials" / "quickstart.md")
    assert len(blocks) >= 4 and "bs.infer(" in blocks[0]


TUTORIALS = ["quickstart", "building-a-model", "choosing-a-method", "calibration", "femur-from-two-xrays"]


@pytest.mark.slow
@pytest.mark.parametrize("page", TUTORIALS)
def test_tutorial_runs(page, tmp_path, monkeypatch):
    source = "\n".join(_blocks(DOCS / "tutorials" / f"{page}.md"))
    if "../shared/data" in source:
        data = shared("femur10")
        if not data.is_dir():
            pytest.skip(f"{data} is absent")
        source = source.replace("../shared/data/femur10", str(data))
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": f"tutorial_{page}"}
    with warnings.catch_warnings():
        # a tutorial shows what a user sees: the warnings it triggers are part of the lesson, not errors
        warnings.simplefilter("default", UserWarning)
        exec(compile(source, f"docs/tutorials/{page}.md", "exec"), namespace)
    assert "bs" in namespace
