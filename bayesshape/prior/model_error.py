"""Model error inside the prior: a Gaussian process for what the shape model cannot represent.

A PCA model of ``n`` shapes spans ``n - 1`` directions. An unseen shape differs from the
model's best fit by a residual that a posterior over the model's coefficients cannot know
about, so its credible regions miss the truth wherever that residual is large. Here the
residual becomes part of the prior: ``x = mean + U diag(sqrt var) alpha + e`` with ``e`` a
zero-mean Gaussian process on the vertices, fitted to the residuals of shapes the model
has not seen (leave-one-out for a PCA model of those shapes). The posterior then leaves
the span of the PCA where the images demand it, and stays as wide as the residual
where they do not.

The residual of a mesh model has two parts that behave differently:

* **along the surface normal** the residual changes the surface, so images see it. It is
  modelled as a scalar Gaussian process ``e_i = n_i s_i g(x_i)``: ``n_i`` the unit normal of
  the mean shape, ``s_i`` the residual's standard deviation along it (estimated per vertex,
  smoothed over neighbours), ``g`` a unit-variance process with correlation
  ``(1 - w) exp(-d^2 / l^2) + w exp(-d^2 / L^2)`` over the Euclidean distance ``d``, its
  lengths fitted to the residuals' correlogram. A low-rank factor of ``g`` (pivoted
  Cholesky, rows rescaled so that every vertex keeps unit variance) becomes extra modes of
  the model: every observation type and inference method uses them unchanged.
* **along the surface** the residual slides the correspondence without changing the
  surface; no image sees it, so its posterior is its prior. It is kept as independent
  per-vertex covariances (``ShapeModel.vertex_noise``) that posteriors add to their
  vertex samples.

A point-set model has no surface: the whole 3D residual is the process (three components
per point, ``e_i = C_i^(1/2) g_i(x_i)``), and nothing is left as independent noise.

Assumptions, and where they fail: the residuals of the shapes it is fitted to are
representative of the new shape's (a shape far outside the training population has a
larger residual than any of them, and is left to the case score of
:meth:`~bayesshape.posterior.samples.ShapeSamples.reliability`); the process is Gaussian and
stationary in its correlation (the per-vertex scale is not); Euclidean distance stands in
for geodesic distance (two sides of a structure thinner than ``l`` are correlated).
docs/experiments.md measures coverage with and without it.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .._checks import as_points
from ._shapes import as_shapes, procrustes_align
from .gp import _eigen_from_factor, _pivoted_cholesky
from .model import ShapeModel
from .residual import best_fit, loo_residuals

__all__ = ["ModelError", "fit_model_error", "add_model_error", "scale_model_error"]


class ModelError(eqx.Module):
    """A Gaussian process for a shape model's residual, fitted by :func:`fit_model_error`.

    Attributes:
        factor: ``(n_vert, 3, m)`` per-vertex root of the correlated part (mm): the normal
            times its standard deviation (``m = 1``) for a mesh, a 3 x 3 root for a point set.
        noise: ``(n_vert, 3, 3)`` covariance of the independent part (mm^2; the sliding along
            the surface), or ``None``.
        length: short correlation length ``l`` (mm).
        long_length: long correlation length ``L`` (mm).
        long_weight: weight ``w`` of the long-range part of the correlation.
        n_shapes: the number of residuals it was fitted to.
        rms_mm: RMS norm of those residuals per vertex (mm).

    Example:
        >>> shapes = bs.datasets.example_shapes(8, seed=0)
        >>> err = bs.prior.fit_model_error(shapes)                   # doctest: +SKIP
        >>> model = bs.add_model_error(bs.build_pca_model(shapes), err)   # doctest: +SKIP
    """

    factor: Float[Array, "n_vert 3 m"]
    noise: Float[Array, "n_vert 3 3"] | None
    length: float = eqx.field(static=True)
    long_length: float = eqx.field(static=True)
    long_weight: float = eqx.field(static=True)
    n_shapes: int = eqx.field(static=True)
    rms_mm: float = eqx.field(static=True)

    def __check_init__(self):
        f = self.factor
        if f.ndim != 3 or f.shape[1] != 3 or f.shape[2] not in (1, 3):
            raise ValueError(f"factor: expected shape (n_vert, 3, 1) or (n_vert, 3, 3), got {f.shape}")
        if self.noise is not None and self.noise.shape != (f.shape[0], 3, 3):
            raise ValueError(f"noise: expected shape ({f.shape[0]}, 3, 3), got {self.noise.shape}")
        for name in ("length", "long_length"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"{name}: expected a positive length in mm, got {v}")
        if not 0.0 <= self.long_weight <= 1.0:
            raise ValueError(f"long_weight: expected a weight in [0, 1], got {self.long_weight}")

    @property
    def n_vertices(self) -> int:
        return int(self.factor.shape[0])

    def correlation(self, d):
        """The fitted correlation at distance ``d`` (mm)."""
        d = np.asarray(d, dtype=np.float64)
        w = self.long_weight
        return (1 - w) * np.exp(-((d / self.length) ** 2)) + w * np.exp(-((d / self.long_length) ** 2))

    def covariance(self) -> np.ndarray:
        """Per-vertex marginal covariance of the whole residual, ``(n_vert, 3, 3)`` mm^2."""
        f = np.asarray(self.factor)
        cov = np.einsum("nim,njm->nij", f, f)
        return cov if self.noise is None else cov + np.asarray(self.noise)

    @classmethod
    def isotropic(cls, reference, sd_mm: float, length_mm: float, *, faces=None) -> ModelError:
        """A model error stated rather than fitted: standard deviation ``sd_mm`` per axis, correlation
        length ``length_mm``, the same everywhere, for a model without training shapes (a Gaussian-process
        model, a file from elsewhere). With ``faces`` (or a mesh) the normal part is correlated and the
        rest independent, as for a fitted one.

        Example:
            >>> err = ModelError.isotropic(model.mean, 1.0, 20.0, faces=model.faces)   # doctest: +SKIP
        """
        v, f = _vertices_faces(reference, faces)
        for name, val in (("sd_mm", sd_mm), ("length_mm", length_mm)):
            if not (isinstance(val, (int, float)) and math.isfinite(val) and val > 0):
                raise ValueError(f"{name}: expected a positive number of mm, got {val!r}")
        second = np.broadcast_to(np.eye(3) * float(sd_mm) ** 2, (v.shape[0], 3, 3)).copy()
        factor, noise = _split(second, _normals(v, f))
        return cls(jnp.asarray(factor), noise, float(length_mm), float(length_mm), 0.0, 0, float(np.sqrt(3) * sd_mm))


def fit_model_error(
    meshes,
    *,
    model: ShapeModel | None = None,
    align: str | None = "rigid",
    faces=None,
    n_modes: int | None = None,
    seed: int = 0,
) -> ModelError:
    """Fit the residual process of a shape model to shapes in correspondence.

    Args:
        meshes: shapes in correspondence (trimesh meshes or ``(N, 3)`` arrays, mm).
        model: ``None`` (default): the residual of a PCA model of these same ``meshes``,
            measured by leave-one-out (at least 4 shapes); what :func:`build_pca_model`
            with ``model_error=True`` uses. A :class:`ShapeModel`: the residuals of its best
            fits to ``meshes``, which must be shapes it was not built from (at least 3).
        align: the pose fitted to each shape before its residual is taken (``"rigid"``,
            ``"similarity"`` or ``None``), as for :func:`build_pca_model`.
        faces: triangles for vertex arrays (default: the meshes'); ``None`` for point sets.
        n_modes: modes of the leave-one-out models (default: all).
        seed: seed of the vertex pairs the correlogram is estimated from.

    Returns:
        A :class:`ModelError` on the vertices of the aligned shapes (or of ``model``).
    """
    shapes, ref_faces = as_shapes(meshes, faces)
    n = shapes.shape[0]
    if align not in (None, "rigid", "similarity"):
        raise ValueError(f"align: expected None, 'rigid' or 'similarity', got {align!r}")
    if model is None:
        if n < 4:
            raise ValueError(f"meshes: a leave-one-out model error needs at least 4 shapes, got {n}")
        if align is not None:
            shapes = procrustes_align(shapes, scale=align == "similarity")
        k = None if n_modes is None else min(n_modes, n - 2)
        resid = loo_residuals(shapes, align, k)
        reference = shapes.mean(0)
    else:
        if not isinstance(model, ShapeModel):
            raise ValueError(f"model: expected a ShapeModel or None, got {type(model).__name__}")
        if shapes.shape[1] != model.n_vertices:
            raise ValueError(
                f"meshes: expected shapes with the model's {model.n_vertices} vertices, got {shapes.shape[1]}"
            )
        if n < 3:
            raise ValueError(f"meshes: a model error needs the residuals of at least 3 shapes, got {n}")
        resid = np.stack([np.subtract(*best_fit(model, s, align=align)) for s in shapes])
        reference = np.asarray(model.mean, dtype=np.float64)
        if ref_faces is None and model.faces is not None:
            ref_faces = np.asarray(model.faces)
    if not np.all(np.isfinite(resid)):
        raise ValueError("meshes: the residuals contain NaN or inf (degenerate shapes?)")
    rms = float(np.sqrt(np.mean(np.sum(resid**2, axis=-1))))
    if rms <= 0:
        raise ValueError("meshes: the model reproduces every shape exactly; there is no model error to fit")
    normals = _normals(reference, ref_faces)
    z = _whitened(resid, normals)
    length, long_length, weight = _fit_correlation(reference, z, seed)
    second = np.einsum("snj,snk->njk", resid, resid) / n
    second = _smooth(reference, second, 0.5 * length)
    factor, noise = _split(second, normals)
    return ModelError(jnp.asarray(factor), noise, length, long_length, weight, n, rms)


def add_model_error(
    model: ShapeModel,
    error: ModelError,
    *,
    rank: int | None = None,
    retained: float = 0.9,
    max_rank: int = 200,
) -> ShapeModel:
    """``model`` with its residual process added: extra modes and per-vertex noise.

    The correlation of ``error`` on the model's mean vertices is factored by pivoted Cholesky
    (the fewest columns that keep ``retained`` of its trace, at most ``max_rank``; or ``rank``),
    every row rescaled to unit norm so that each vertex keeps exactly the residual's variance,
    then multiplied by the per-vertex factor ``F``; these columns and the model's own modes are
    re-orthogonalised by one thin SVD, so that the prior covariance is exactly the model's plus
    ``F F^T``. The independent part goes to ``vertex_noise``.

    Args:
        model: any :class:`ShapeModel` (PCA, Gaussian process, augmented; mesh or point set).
        error: a :class:`ModelError` on the same vertices.
        rank: columns of the correlation's factor (default: by ``retained``).
        retained: fraction of the correlation's trace the factor keeps before rescaling.
        max_rank: upper bound on the default rank (each column is a parameter of the posterior
            for a mesh, three for a point set).

    Example:
        >>> model = bs.add_model_error(model, bs.prior.fit_model_error(shapes))   # doctest: +SKIP
    """
    if not isinstance(model, ShapeModel):
        raise ValueError(f"model: expected a ShapeModel, got {type(model).__name__}")
    if not isinstance(error, ModelError):
        raise ValueError(f"error: expected a ModelError (bayesshape.prior.fit_model_error), got {type(error).__name__}")
    if error.n_vertices != model.n_vertices:
        raise ValueError(
            f"error: fitted on {error.n_vertices} vertices, the model has {model.n_vertices}; "
            "fit it to shapes in the model's correspondence"
        )
    if model.vertex_noise is not None:
        raise ValueError("model: it already has a model error; add one to the model without it")
    if not 0 < retained <= 1:
        raise ValueError(f"retained: expected a fraction in (0, 1], got {retained}")
    if rank is not None and (not isinstance(rank, (int, np.integer)) or rank < 1):
        raise ValueError(f"rank: expected a positive integer, got {rank!r}")
    if not isinstance(max_rank, (int, np.integer)) or max_rank < 1:
        raise ValueError(f"max_rank: expected a positive integer, got {max_rank!r}")
    mean = np.asarray(model.mean, dtype=np.float64)
    phi = correlation_factor(mean, error, rank=rank if rank is not None else max_rank, retained=retained)
    f = np.asarray(error.factor, dtype=np.float64)
    cols = np.einsum("nim,nk->nimk", f, phi).reshape(3 * mean.shape[0], -1)
    u = np.asarray(model.basis, np.float64)
    lam_model = np.asarray(model.variance, np.float64)
    common = {
        "noise_variance": float(model.noise_variance),
        "faces": model.faces,
        "total_variance": float(model.total_variance) + float(np.sum(f**2)),
        "vertex_noise": error.noise,
    }
    lam, basis = _eigen_from_factor(np.concatenate([u * np.sqrt(lam_model)[None, :], cols], axis=1))
    keep = int(np.sum(lam > 1e-12 * lam[0]))
    basis, lam = basis[:, :keep], lam[:keep]
    # the model error's share of the whitened prior: cols = B diag(sqrt(lam)) Q
    q = (basis.T @ cols) / np.sqrt(lam)[:, None]
    q *= min(1.0, 1.0 / float(np.linalg.svd(q, compute_uv=False)[0]))  # rounding only: Q Q^T <= I exactly
    return ShapeModel(mean, basis, lam, error_factor=q, **common)


def scale_model_error(model: ShapeModel, scale: float) -> ShapeModel:
    """``model`` with its model error's standard deviation multiplied by ``scale``.

    The prior covariance ``P + E`` (the shape population's and the model error's) becomes
    ``P + scale^2 E``: the extra modes and the per-vertex noise (``vertex_noise``) widen
    together, the population's part is unchanged. The modes are re-diagonalised, so the
    coefficients of the result are not those of ``model``.

    Args:
        model: a model with a model error (:func:`add_model_error`; ``model.error_factor``).
        scale: a positive factor (1 returns the same distribution).

    Example:
        >>> wider = bs.prior.scale_model_error(model, 2.0)   # doctest: +SKIP
    """
    return _scaled_model(model, scale)[0]


def _scaled_model(model: ShapeModel, scale: float):
    """``(scaled model, L, V)``: the model of :func:`scale_model_error`, and the maps between
    coefficients: ``model``'s whitened ``alpha = L z`` with ``z ~ N(0, I)`` under the scaled prior,
    and the scaled model's coefficients ``V^T z``."""
    if not isinstance(model, ShapeModel):
        raise ValueError(f"model: expected a ShapeModel, got {type(model).__name__}")
    if model.error_factor is None:
        raise ValueError(
            "model: it has no model error to scale (build it with build_pca_model(..., model_error=True) "
            "or bs.add_model_error)"
        )
    if (
        isinstance(scale, bool)
        or not isinstance(scale, (int, float, np.floating))
        or not (math.isfinite(scale) and scale > 0)
    ):
        raise ValueError(f"scale: expected a positive number, got {scale!r}")
    s2 = float(scale) ** 2
    q = np.asarray(model.error_factor, np.float64)
    vq, sq, _ = np.linalg.svd(q, full_matrices=False)
    grow = np.sqrt(1.0 + (s2 - 1.0) * sq**2)
    k = q.shape[0]
    lmat = np.eye(k) + (vq * (grow - 1.0)) @ vq.T
    lmat_inv = np.eye(k) + (vq * (1.0 / grow - 1.0)) @ vq.T
    var = np.asarray(model.variance, np.float64)
    gram = lmat @ (var[:, None] * lmat)
    lam, v = np.linalg.eigh(0.5 * (gram + gram.T))
    order = np.argsort(lam)[::-1]
    lam, v = np.maximum(lam[order], 0.0), v[:, order]
    basis_old = np.asarray(model.basis, np.float64)
    safe = np.sqrt(np.where(lam > 0, lam, 1.0))
    basis = (basis_old * np.sqrt(var)[None, :]) @ (lmat @ v) / safe[None, :]
    error_var = float(np.sum(var * np.sum(q**2, axis=1)))
    noise = None
    if model.vertex_noise is not None:
        old = np.asarray(model.vertex_noise)
        error_var += float(np.trace(old.astype(np.float64), axis1=1, axis2=2).sum())
        noise = (s2 * old).astype(old.dtype)
    q_new = np.sqrt(s2) * v.T @ lmat_inv @ q
    q_new *= min(1.0, 1.0 / float(np.linalg.svd(q_new, compute_uv=False)[0]))
    scaled = ShapeModel(
        model.mean,
        basis,
        lam,
        noise_variance=model.noise_variance,
        faces=model.faces,
        total_variance=float(model.total_variance) + (s2 - 1.0) * error_var,
        vertex_noise=noise,
        error_factor=q_new,
    )
    return scaled, lmat, v


def correlation_factor(points, error: ModelError, *, rank: int, retained: float = 1.0) -> np.ndarray:
    """``(N, r)`` factor of the correlation of ``error`` on ``points`` with unit-norm rows."""
    x = as_points(points, "points")

    def column(p):
        return error.correlation(np.linalg.norm(x - x[p], axis=1))

    tol = x.shape[0] * (1.0 - retained)
    phi = _pivoted_cholesky(np.ones(x.shape[0]), column, min(rank, x.shape[0]), tol)
    norm = np.linalg.norm(phi, axis=1, keepdims=True)
    return phi / np.maximum(norm, 1e-12)


# ---------------------------------------------------------------------------- helpers
def _vertices_faces(reference, faces):
    if hasattr(reference, "vertices"):
        f = getattr(reference, "faces", None)
        return as_points(reference.vertices, "reference"), (faces if faces is not None else f)
    return as_points(reference, "reference"), faces


def _normals(vertices: np.ndarray, faces) -> np.ndarray | None:
    """Unit vertex normals of the mesh, or ``None`` for a point set."""
    if faces is None or len(faces) == 0:
        return None
    import trimesh

    mesh = trimesh.Trimesh(vertices, np.asarray(faces), process=False)
    nrm = np.asarray(mesh.vertex_normals, dtype=np.float64)
    bad = ~np.isfinite(nrm).all(axis=1) | (np.linalg.norm(nrm, axis=1) < 0.5)
    if bad.any():
        raise ValueError(f"faces: {int(bad.sum())} vertices have no normal (not on any face); a model error needs one")
    return nrm


def _whitened(resid: np.ndarray, normals) -> np.ndarray:
    """Residuals scaled to unit variance per vertex: ``(n, N, c)`` with ``c`` 1 (normal) or 3."""
    if normals is not None:
        r = np.einsum("snj,nj->sn", resid, normals)[..., None]
    else:
        r = resid
    sd = np.sqrt(np.mean(r**2, axis=0, keepdims=True))
    return r / np.maximum(sd, 1e-12 * max(float(sd.max()), 1e-300))


def _fit_correlation(points: np.ndarray, z: np.ndarray, seed: int, n_pairs: int = 200_000):
    """Lengths ``(l, L)`` and weight ``w`` of the two-scale Gaussian correlation fitted to the binned
    correlogram of the whitened residuals ``z`` over near and far vertex pairs."""
    from scipy.optimize import least_squares
    from scipy.spatial import cKDTree

    rng = np.random.default_rng(seed)
    n_pts = points.shape[0]
    extent = float(np.linalg.norm(points.max(0) - points.min(0)))
    if n_pts < 3 or extent <= 0:
        raise ValueError("meshes: a model error needs at least 3 distinct points")
    i = rng.integers(0, n_pts, n_pairs)
    j = rng.integers(0, n_pts, n_pairs)
    k = min(32, n_pts)
    if k > 1:  # half the pairs among near neighbours: the correlogram's short range needs them
        _, nn = cKDTree(points).query(points[i[: n_pairs // 2]], k=k)
        j[: n_pairs // 2] = nn[np.arange(n_pairs // 2), rng.integers(1, k, n_pairs // 2)]
    keep = i != j
    i, j = i[keep], j[keep]
    d = np.linalg.norm(points[i] - points[j], axis=1)
    c = np.mean(np.sum(z[:, i] * z[:, j], axis=-1), axis=0) / z.shape[-1]
    edges = np.geomspace(max(float(d.min()), extent * 1e-4), extent, 40)
    which = np.digitize(d, edges)
    centre, value, weight = [], [], []
    for k_bin in range(1, len(edges)):
        sel = which == k_bin
        if sel.sum() >= 20:
            centre.append(float(d[sel].mean()))
            value.append(float(c[sel].mean()))
            weight.append(math.sqrt(sel.sum()))
    dc, vc, wc = np.array(centre), np.array(value), np.array(weight)
    wc = wc / wc.max()

    def resid(p):
        length, long_length, w = np.exp(p[0]), np.exp(p[1]), p[2]
        model = (1 - w) * np.exp(-((dc / length) ** 2)) + w * np.exp(-((dc / long_length) ** 2))
        return wc * (model - vc)

    lo = extent * 1e-3
    x0 = [math.log(extent / 20), math.log(extent / 4), 0.1]
    fit = least_squares(
        resid, x0, bounds=([math.log(lo), math.log(lo), 0.0], [math.log(extent), math.log(2 * extent), 0.5])
    )
    a, b, w = float(np.exp(fit.x[0])), float(np.exp(fit.x[1])), float(fit.x[2])
    if b < a:  # keep the names in order: l the short one
        a, b, w = b, a, 1.0 - w
    return a, b, w


def _smooth(points: np.ndarray, second: np.ndarray, radius: float) -> np.ndarray:
    """Per-vertex second moments ``(N, 3, 3)`` averaged over neighbours with Gaussian weights of width
    ``radius`` (each rests on a handful of residuals; the scale varies slowly over the surface)."""
    from scipy.sparse import coo_matrix
    from scipy.spatial import cKDTree

    tree = cKDTree(points)
    pairs = tree.query_pairs(2.0 * radius, output_type="ndarray")
    n = points.shape[0]
    d2 = np.sum((points[pairs[:, 0]] - points[pairs[:, 1]]) ** 2, axis=1)
    w = np.exp(-d2 / radius**2)
    rows = np.concatenate([pairs[:, 0], pairs[:, 1], np.arange(n)])
    cols = np.concatenate([pairs[:, 1], pairs[:, 0], np.arange(n)])
    vals = np.concatenate([w, w, np.ones(n)])
    wmat = coo_matrix((vals, (rows, cols)), shape=(n, n)).tocsr()
    total = np.asarray(wmat.sum(axis=1)).ravel()
    out = (wmat @ second.reshape(n, 9)) / total[:, None]
    out = out.reshape(n, 3, 3)
    return 0.5 * (out + np.swapaxes(out, 1, 2))


def _split(second: np.ndarray, normals):
    """The correlated factor ``(N, 3, m)`` and the independent covariance (or None) of per-vertex second
    moments: along the normal and across it for a mesh, all of it correlated for a point set."""
    if normals is None:
        w, v = np.linalg.eigh(second)
        root = np.einsum("nij,nj,nkj->nik", v, np.sqrt(np.maximum(w, 0.0)), v)
        return root, None
    var_n = np.einsum("ni,nij,nj->n", normals, second, normals)
    factor = normals[:, :, None] * np.sqrt(np.maximum(var_n, 0.0))[:, None, None]
    proj = np.eye(3)[None] - normals[:, :, None] * normals[:, None, :]
    tangent = np.einsum("nij,njk,nlk->nil", proj, second, proj)
    return factor, jnp.asarray(0.5 * (tangent + np.swapaxes(tangent, 1, 2)))
