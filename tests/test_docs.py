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


TUTORIALS = [
    "quickstart",
    "building-a-model",
    "raw-surfaces",
    "choosing-a-method",
    "calibration",
    "femur-from-two-xrays",
]


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


def test_every_public_name_is_in_the_api_reference():
    """A name added to an ``__all__`` must be added to docs/reference/ too (and have a docstring,
    tests/test_layers.py): the reference is generated from the docstrings of the names it lists."""
    import inspect

    listed = set(
        re.findall(r"^::: ([\w.]+)$", "\n".join(p.read_text() for p in (DOCS / "reference").glob("*.md")), re.M)
    )
    missing = []
    for module in (
        bs,
        bs.prior,
        bs.projection,
        bs.obs,
        bs.posterior,
        bs.inference,
        bs.registration,
        bs.io,
        bs.export,
        bs.report,
    ):
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.ismodule(obj) or not (callable(obj) or inspect.isclass(obj)):
                continue
            full = f"{module.__name__}.{name}"
            if full not in listed and f"bayesshape.{name}" not in listed:
                missing.append(full)
    assert not missing, f"not in docs/reference/: {missing}"
