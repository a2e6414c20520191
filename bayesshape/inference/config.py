"""Inference methods and likelihood settings as small frozen configuration objects.

Each method is a value, validated when it is built, that :func:`bayesshape.infer` runs:
a setting that only one method reads lives on that method's object, so it cannot be
passed to another by mistake (the way NumPyro separates ``NUTS(...)`` from ``MCMC(...)``).

Example:
    >>> import bayesshape as bs
    >>> bs.NUTS(num_chains=4, target_accept_prob=0.9)
    NUTS(num_warmup=500, num_chains=4, target_accept_prob=0.9, mass='laplace', max_tree_depth=10)
    >>> bs.Laplace().hessian
    'gauss-newton'
"""

from __future__ import annotations

import dataclasses

from .._checks import as_count, as_positive

__all__ = ["NUTS", "SVI", "Laplace", "Importance", "LikelihoodOptions", "Method", "as_method"]


def _check_hessian(hessian: str) -> None:
    if hessian not in ("gauss-newton", "finite-difference"):
        raise ValueError(f"hessian: expected 'gauss-newton' or 'finite-difference', got {hessian!r}")


@dataclasses.dataclass(frozen=True)
class Laplace:
    """MAP by L-BFGS and Gauss-Newton steps, then a Gaussian with the inverse Hessian as covariance.

    Args:
        hessian: ``"gauss-newton"`` (default): the prior precision plus the Fisher information
            ``J^T J`` of the data with the exact Jacobian of the whitened residuals; positive
            definite, exact for linear-Gaussian data. ``"finite-difference"``: central
            differences of the gradient, eigenvalues clipped at the prior precision. Where an
            observation has no Gauss-Newton form the finite-difference Hessian is used; the one
            used is in ``diagnostics.info.hessian``.
        map_modes: fit the MAP in each shape model's first ``map_modes`` modes only (the rest held
            at zero), then take Gauss-Newton steps in all of them to the mode (at most 10, until a
            full step would gain less than 1e-3 nats) and the covariance over all there: the
            later modes (a GP model's fine detail, a model error) are marginalised around the fit
            at the cost of a few Jacobians over every mode instead of a fit by L-BFGS in all of
            them. One step suffices for linear-Gaussian data (a Newton step from any point
            reaches the mode). Default None: the MAP over every mode.
    """

    hessian: str = "gauss-newton"
    map_modes: int | None = None

    name = "laplace"

    def __post_init__(self):
        _check_hessian(self.hessian)
        if self.map_modes is not None:
            object.__setattr__(self, "map_modes", as_count(self.map_modes, "map_modes", 1))
            if self.hessian != "gauss-newton":
                raise ValueError("map_modes: the step to all modes is a Gauss-Newton step (hessian='gauss-newton')")


@dataclasses.dataclass(frozen=True)
class Importance:
    """Adaptive multiple importance sampling started from the Laplace Gaussian.

    Args:
        rounds: proposal rounds (>= 1; 1 is plain importance sampling from the Gaussian).
        samples: draws weighted per round (>= 50); each costs one log-density evaluation.
        hessian: the Laplace start's Hessian (see :class:`Laplace`).

    The draws' importance-sampling ESS and Pareto ``k-hat`` are in ``diagnostics.info``:
    ``k-hat > 0.7`` means the Gaussian start misses the posterior (use :class:`NUTS`).
    """

    rounds: int = 4
    samples: int = 1000
    hessian: str = "gauss-newton"

    name = "importance"

    def __post_init__(self):
        object.__setattr__(self, "rounds", as_count(self.rounds, "rounds", 1))
        object.__setattr__(self, "samples", as_count(self.samples, "samples", 50))
        _check_hessian(self.hessian)


@dataclasses.dataclass(frozen=True)
class SVI:
    """Stochastic variational inference with a multivariate-normal guide (NumPyro, optax Adam).

    The guide is full-rank up to 60 parameters and low-rank (rank 30) beyond. It starts at
    the Laplace approximation, in coordinates whitened by it, so Adam's steps are in units of
    posterior sd for every parameter.

    Args:
        steps: Adam steps (>= 1).
        learning_rate: the initial rate; it decays to a tenth over the run (cosine).
    """

    steps: int = 3000
    learning_rate: float = 0.01

    name = "svi"

    def __post_init__(self):
        object.__setattr__(self, "steps", as_count(self.steps, "steps", 1))
        object.__setattr__(self, "learning_rate", as_positive(self.learning_rate, "learning_rate"))


@dataclasses.dataclass(frozen=True)
class NUTS:
    """The No-U-Turn sampler (NumPyro), several chains started around the MAP.

    Args:
        num_warmup: warm-up draws per chain (>= 0).
        num_chains: chains (>= 1); R-hat needs at least 2.
        target_accept_prob: the warm-up's step-size target, in (0, 1).
        mass: the inverse mass matrix. ``"laplace"`` (default): fixed at the Laplace
            (Gauss-Newton) covariance at the MAP; the warm-up tunes the step size only.
            ``"adapt"``: started there and re-estimated by Stan's windowed warm-up (dense up to
            80 parameters), which needs a warm-up of many times the number of parameters.
        max_tree_depth: the largest tree: a draw costs at most ``2**max_tree_depth - 1``
            gradients. The share of draws that reach it is in ``diagnostics.info``, with a
            warning above 1%.
    """

    num_warmup: int = 500
    num_chains: int = 2
    target_accept_prob: float = 0.85
    mass: str = "laplace"
    max_tree_depth: int = 10

    name = "nuts"

    def __post_init__(self):
        object.__setattr__(self, "num_warmup", as_count(self.num_warmup, "num_warmup", 0))
        object.__setattr__(self, "num_chains", as_count(self.num_chains, "num_chains", 1))
        object.__setattr__(self, "max_tree_depth", as_count(self.max_tree_depth, "max_tree_depth", 1))
        p = as_positive(self.target_accept_prob, "target_accept_prob")
        if not p < 1.0:
            raise ValueError(f"target_accept_prob: expected a probability in (0, 1), got {self.target_accept_prob!r}")
        object.__setattr__(self, "target_accept_prob", p)
        if self.mass not in ("laplace", "adapt"):
            raise ValueError(f"mass: expected 'laplace' or 'adapt', got {self.mass!r}")


Method = Laplace | Importance | SVI | NUTS

_BY_NAME = {"laplace": Laplace, "importance": Importance, "svi": SVI, "nuts": NUTS}


def as_method(method) -> Method:
    """A method object from itself or from its name (``"nuts"``, ``"svi"``, ``"laplace"``,
    ``"importance"``: the defaults of that method)."""
    if isinstance(method, (Laplace, Importance, SVI, NUTS)):
        return method
    if isinstance(method, str) and method in _BY_NAME:
        return _BY_NAME[method]()
    raise ValueError(
        f"method: expected bs.NUTS(...), bs.SVI(...), bs.Laplace(...), bs.Importance(...) or one of "
        f"'nuts', 'svi', 'laplace', 'importance', got {method!r}"
    )


@dataclasses.dataclass(frozen=True)
class LikelihoodOptions:
    """How the observations' likelihood is evaluated, whatever the method.

    Args:
        coarse_faces: evaluate the mesh-rendering likelihoods (contours, masks, DRRs) on a
            decimated copy of the model's mesh with about this many faces
            (:func:`bayesshape.prior.coarsen_mesh`: a subset of the model's own vertices, so the
            posterior and every uncertainty map stay on the full mesh). Their cost falls in
            proportion; the surface of a 4000-face femur lies 0.10 mm from the 23294-face one
            on average. Default ``None``: the full mesh. Landmarks and surface points always
            use the model's own vertices.
        composite_weights: temper each observation with correlated residuals (contours) by a
            composite-likelihood weight estimated at the MAP (:func:`bayesshape.obs.composite_weights`:
            the variance inflation of its correlated residuals times its misfit), then re-fit
            the MAP; without it, contour credible regions are too small. The weights are in
            ``diagnostics.map.composite_weights``.
        infer_noise: also infer one noise-scale multiplier per observation (log-normal prior).
        noise_sd: the sd of that log-normal prior (> 0).
        model_error_scale: for a model with a model error in its prior
            (``build_pca_model(..., model_error=True)``), a positive factor on its standard
            deviation (:func:`bayesshape.prior.scale_model_error`). The model error is fitted
            to the training shapes' residuals; a case known or flagged to lie further outside
            the population than any of them has a larger one. Default 1: the model error as
            fitted. The factor used is in ``diagnostics.map.model_error_scale``.
    """

    coarse_faces: int | None = None
    composite_weights: bool = True
    infer_noise: bool = False
    noise_sd: float = 0.5
    model_error_scale: float = 1.0

    def __post_init__(self):
        m = self.model_error_scale
        if isinstance(m, (str, bool)):
            raise ValueError(f"model_error_scale: expected a positive number, got {m!r}")
        object.__setattr__(self, "model_error_scale", as_positive(m, "model_error_scale"))
        if self.coarse_faces is not None:
            object.__setattr__(self, "coarse_faces", as_count(self.coarse_faces, "coarse_faces", 4))
        object.__setattr__(self, "noise_sd", as_positive(self.noise_sd, "noise_sd"))
        for name in ("composite_weights", "infer_noise"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name}: expected True or False, got {getattr(self, name)!r}")
