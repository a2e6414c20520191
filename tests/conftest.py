"""Test configuration: float64, strict dtype and rank promotion, shared-data paths."""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
import pytest

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")

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
