"""Observations of one object of an assembly (:class:`~bayesshape.prior.Assembly`).

An observation given to :func:`bayesshape.infer` with an assembly sees the whole assembly: a DRR
is the sum of every object's path lengths, a mask or contour is the outline of their union, and
landmark ids index the combined vertex array. :class:`OnObject` restricts an observation to one
object: its mesh alone is rendered and its vertex ids are the object's own.
"""

from __future__ import annotations

import equinox as eqx
import numpy as np

from .base import Observation

__all__ = ["OnObject"]


class OnObject(Observation):
    """An observation of the object ``name`` of an assembly alone.

    Args:
        observation: any observation (landmarks with the object's own vertex ids, a contour or a
            mask of that object alone, e.g. one label of a label image).
        name: the object's name in the assembly.

    Example:
        >>> lm = bs.obs.Landmarks3D([0, 10, 20], points, sigma=1.0)           # doctest: +SKIP
        >>> post = bs.infer(spine, [drr_ap, drr_lat, bs.obs.OnObject(lm, "L3")])  # doctest: +SKIP
    """

    observation: Observation
    name: str = eqx.field(static=True)
    #: the object's rows in the combined vertex array, set by :meth:`locate` (``infer`` does)
    rows: tuple[int, int] | None = eqx.field(static=True, default=None)

    def __check_init__(self):
        if not isinstance(self.observation, Observation):
            raise ValueError(f"observation: expected a bayesshape observation, got {type(self.observation).__name__}")
        if isinstance(self.observation, OnObject):
            raise ValueError("observation: already restricted to an object")
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"name: expected an object name, got {self.name!r}")

    def locate(self, start: int, stop: int) -> OnObject:
        """A copy that reads rows ``start:stop`` of the combined vertices."""
        return OnObject(self.observation, self.name, (int(start), int(stop)))

    def _rows(self, vertices):
        if self.rows is None:
            raise ValueError(f"OnObject({self.name!r}): not located in an assembly (infer does that)")
        return vertices[self.rows[0] : self.rows[1]]

    def _wrap(self, inner: Observation) -> OnObject:
        return OnObject(inner, self.name, self.rows)

    # the observation contract, forwarded to the object's rows
    def bind(self, faces, reference_vertices) -> OnObject:
        return self._wrap(self.observation.bind(faces, reference_vertices))

    def log_likelihood(self, vertices, sigma=None):
        return self.observation.log_likelihood(self._rows(vertices), sigma)

    def pointwise_log_likelihood(self, vertices, sigma=None):
        return self.observation.pointwise_log_likelihood(self._rows(vertices), sigma)

    def residuals(self, vertices):
        return self.observation.residuals(self._rows(vertices))

    def whitened_residuals(self, vertices, sigma=None):
        return self.observation.whitened_residuals(self._rows(vertices), sigma)

    def has_gauss_newton(self) -> bool:  # type: ignore[override]
        return self.observation.has_gauss_newton()

    def log_sigma_information(self) -> float:
        return self.observation.log_sigma_information()

    def overflow(self, vertices) -> bool:
        return self.observation.overflow(self._rows(vertices))

    @property
    def correlated_residuals(self) -> bool:  # type: ignore[override]
        return self.observation.correlated_residuals

    @property
    def renders_mesh(self) -> bool:  # type: ignore[override]
        return self.observation.renders_mesh

    def with_weight(self, weight: float) -> OnObject:
        return self._wrap(self.observation.with_weight(weight))

    def residual_vectors(self, vertices):
        return self.observation.residual_vectors(self._rows(vertices))

    def sampling_caveat(self) -> str | None:
        return self.observation.sampling_caveat()

    def check_units(self, model_mean: np.ndarray) -> None:
        self.observation.check_units(self._rows(model_mean))

    def pose_anchor(self, model_mean, centroid):
        return self.observation.pose_anchor(self._rows(model_mean), centroid)

    def warm_start(self) -> OnObject | None:
        w = self.observation.warm_start()
        return None if w is None else self._wrap(w)

    @property
    def sigma(self):
        return self.observation.sigma

    @property
    def n_data(self) -> int:
        return self.observation.n_data
