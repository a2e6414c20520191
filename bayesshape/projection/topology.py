"""Mesh connectivity precomputed once (eagerly, in NumPy) for the renderers."""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Int

from .._checks import as_faces

__all__ = ["Topology"]


class Topology(eqx.Module):
    """Faces, unique edges and the two faces beside each edge.

    Attributes:
        faces: ``(n_face, 3)`` int32 triangles.
        edges: ``(n_edge, 2)`` int32 vertex pairs.
        edge_faces: ``(n_edge, 2)`` int32 adjacent faces; for a boundary edge (one
            face only) both entries hold that face.
        boundary: ``(n_edge,)`` bool, True for boundary edges (open meshes).
    """

    faces: Int[Array, "n_face 3"]
    edges: Int[Array, "n_edge 2"]
    edge_faces: Int[Array, "n_edge 2"]
    boundary: Bool[Array, " n_edge"]

    @classmethod
    def from_faces(cls, faces, n_vertices: int | None = None) -> Topology:
        """Build from ``(F, 3)`` triangles; raises ``ValueError`` on non-manifold edges."""
        f = np.asarray(faces)
        n = int(f.max()) + 1 if n_vertices is None else n_vertices
        f = as_faces(f, n)
        he = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]], axis=0)
        face_of = np.tile(np.arange(f.shape[0]), 3)
        key = np.sort(he, axis=1)
        order = np.lexsort((key[:, 1], key[:, 0]))
        key, face_of = key[order], face_of[order]
        uniq, start, counts = np.unique(key, axis=0, return_index=True, return_counts=True)
        if counts.max() > 2:
            bad = uniq[np.argmax(counts)]
            raise ValueError(
                f"faces: edge {tuple(bad)} is shared by {counts.max()} triangles; the mesh must be manifold"
            )
        f0 = face_of[start]
        f1 = np.where(counts == 2, face_of[np.minimum(start + 1, len(face_of) - 1)], f0)
        return cls(
            jnp.asarray(f),
            jnp.asarray(uniq.astype(np.int32)),
            jnp.asarray(np.stack([f0, f1], axis=1).astype(np.int32)),
            jnp.asarray(counts == 1),
        )

    @property
    def n_edges(self) -> int:
        return self.edges.shape[0]
