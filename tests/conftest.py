"""Test configuration: float64, strict dtype and rank promotion, shared-data paths, and a persistent
compilation cache shared by the test processes and the command-line runs they start."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import jax
import numpy as np
import pytest

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")

# Many tests compile the same programs: in both pytest-xdist workers and in every `bayesshape` command a
# test runs as a subprocess (which inherits these variables). JAX's persistent cache compiles each once.
_CACHE = os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR", str(Path(tempfile.gettempdir()) / f"bayesshape-tests-jax-cache-{os.getuid()}")
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(2 * 1024**3))
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update(
    "jax_persistent_cache_min_compile_time_secs", float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"])
)
jax.config.update("jax_compilation_cache_max_size", int(os.environ["JAX_COMPILATION_CACHE_MAX_SIZE"]))

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
