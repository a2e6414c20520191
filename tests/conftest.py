"""Test configuration: float64, strict dtype and rank promotion, shared-data paths."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import jax
import numpy as np
import pytest

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")

# One persistent compilation cache for the whole run, shared by the xdist workers and by the command-line
# subprocesses the tests start: a likelihood compiled once is loaded (the same executable, so the same numbers)
# wherever the same program is built again. It starts empty in every run and is removed at its end.
_CACHE_ENV = "BAYESSHAPE_TEST_JAX_CACHE"


def pytest_configure(config):
    if _CACHE_ENV not in os.environ:  # the controller (or a run without xdist): workers inherit the environment
        folder = tempfile.mkdtemp(prefix="bayesshape-jax-cache-")
        os.environ[_CACHE_ENV] = folder
        os.environ["JAX_COMPILATION_CACHE_DIR"] = folder
        os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0.1"
        config._bayesshape_jax_cache = folder
    jax.config.update("jax_compilation_cache_dir", os.environ[_CACHE_ENV])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.1)


def pytest_unconfigure(config):
    folder = getattr(config, "_bayesshape_jax_cache", None)
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)
        for key in (_CACHE_ENV, "JAX_COMPILATION_CACHE_DIR", "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"):
            os.environ.pop(key, None)


DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared(*parts: str) -> Path:
    """Path under ../shared/data; skips the test cleanly when it is absent."""
    p = DATA.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"shared data not present: {p}")
    return p


@pytest.fixture(scope="session")
def femur_meshes():
    import trimesh

    folder = shared("femur10")
    files = sorted(folder.glob("*.ply"))
    if len(files) != 10:
        pytest.skip(f"expected 10 femurs in {folder}, found {len(files)}")
    return [trimesh.load(f, process=False) for f in files]


@pytest.fixture(scope="session")
def example_shapes():
    from bayesshape import datasets

    return datasets.example_shapes(12, seed=0)


@pytest.fixture(scope="session")
def example_model(example_shapes):
    import bayesshape as bs

    return bs.build_pca_model(example_shapes, align="rigid")


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
