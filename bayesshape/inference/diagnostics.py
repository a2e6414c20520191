"""Typed diagnostics records of an inference run, and the warnings they raise.

Every :class:`~bayesshape.Posterior` from :func:`bayesshape.infer` carries one
:class:`Diagnostics`: what is common to every method (data, parameters, the MAP fit, wall
time, warnings) and, in ``info``, the record of the method that ran (:class:`NUTSInfo`,
:class:`SVIInfo`, :class:`LaplaceInfo`, :class:`ImportanceInfo`, :class:`ClosedFormInfo`),
in the way BlackJAX returns a ``NUTSInfo``. ``to_dict()`` gives the JSON form written to
``summary.json``; :meth:`Diagnostics.from_dict` reads it back.

Example:
    >>> d = Diagnostics(method="laplace", n_data=10, n_params=3, info=LaplaceInfo(hessian="gauss-newton"))
    >>> d.to_dict()["laplace_hessian"]
    'gauss-newton'
    >>> Diagnostics.from_dict(d.to_dict()) == d
    True
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Any

import numpy as np

__all__ = [
    "Diagnostics",
    "MapInfo",
    "LaplaceInfo",
    "ImportanceInfo",
    "SVIInfo",
    "NUTSInfo",
    "ClosedFormInfo",
    "sampler_warnings",
    "ess_bulk_tail",
]


def _floats(x) -> tuple[float, ...] | None:
    return None if x is None else tuple(float(v) for v in x)


@dataclasses.dataclass(frozen=True)
class MapInfo:
    """The MAP fit.

    Attributes:
        log_density: the unnormalised log posterior at the MAP (nats).
        iterations: L-BFGS function evaluations over all fits.
        newton_decrement: the nats a full Gauss-Newton step would still gain (NaN where the
            observations have no Gauss-Newton form); above 5 the MAP is flagged unconverged.
        newton_steps: Gauss-Newton steps taken after L-BFGS.
        warm_start: per observation, the type of its wider-reaching stand-in used for the first
            fit, or None (see :meth:`~bayesshape.obs.Observation.warm_start`); None when no
            observation has one.
        composite_weights: the composite-likelihood weights, in the order of the observations
            with correlated residuals (contours), or None when none were estimated.
        model_error_scale: the factor on the model error's standard deviation the posterior
            used (``LikelihoodOptions(model_error_scale=...)``), or None when it was not scaled.
    """

    log_density: float
    iterations: int
    newton_decrement: float
    newton_steps: int
    warm_start: tuple[str | None, ...] | None = None
    composite_weights: tuple[float, ...] | None = None
    model_error_scale: float | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "map_log_density": self.log_density,
            "map_iterations": self.iterations,
            "map_newton_decrement": self.newton_decrement,
            "map_newton_steps": self.newton_steps,
        }
        if self.warm_start is not None:
            d["map_warm_start"] = list(self.warm_start)
        if self.composite_weights is not None:
            d["composite_weights"] = list(self.composite_weights)
        if self.model_error_scale is not None:
            d["model_error_scale"] = self.model_error_scale
        return d

    @classmethod
    def from_dict(cls, d: dict) -> MapInfo | None:
        if "map_log_density" not in d:
            return None
        ws = d.get("map_warm_start")
        return cls(
            float(d["map_log_density"]),
            int(d["map_iterations"]),
            float(d["map_newton_decrement"]),
            int(d["map_newton_steps"]),
            None if ws is None else tuple(ws),
            _floats(d.get("composite_weights")),
            None if d.get("model_error_scale") is None else float(d["model_error_scale"]),
        )


@dataclasses.dataclass(frozen=True)
class LaplaceInfo:
    """Laplace approximation: which Hessian was used (``"gauss-newton"`` or ``"finite-difference"``)."""

    hessian: str

    def to_dict(self) -> dict[str, Any]:
        return {"laplace_hessian": self.hessian}

    @classmethod
    def from_dict(cls, d: dict) -> LaplaceInfo:
        return cls(d["laplace_hessian"])


@dataclasses.dataclass(frozen=True)
class ImportanceInfo:
    """Adaptive importance sampling.

    Attributes:
        hessian: the Hessian of the Laplace start.
        ess: effective sample size of the final weights.
        khat: Pareto ``k-hat`` of the final weights (> 0.7: unreliable).
        ess_rounds: the ESS after each round.
        rounds: proposal rounds.
        samples: draws weighted in all.
    """

    hessian: str
    ess: float
    khat: float
    ess_rounds: tuple[float, ...]
    rounds: int
    samples: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "laplace_hessian": self.hessian,
            "is_ess": self.ess,
            "is_khat": self.khat,
            "is_ess_rounds": list(self.ess_rounds),
            "is_rounds": self.rounds,
            "is_samples": self.samples,
        }

    @classmethod
    def from_dict(cls, d: dict) -> ImportanceInfo:
        return cls(
            d.get("laplace_hessian", "gauss-newton"),
            float(d["is_ess"]),
            float(d["is_khat"]),
            _floats(d["is_ess_rounds"]) or (),
            int(d["is_rounds"]),
            int(d["is_samples"]),
        )


@dataclasses.dataclass(frozen=True)
class SVIInfo:
    """Stochastic variational inference.

    Attributes:
        loss: the ELBO loss at every step.
        final_loss: the mean loss over the last tenth of the steps.
        converged: whether the loss had stopped changing (last two tenths agree within their noise).
        start: where the guide started (``"laplace"``).
    """

    loss: tuple[float, ...]
    final_loss: float
    converged: bool
    start: str = "laplace"

    def to_dict(self) -> dict[str, Any]:
        return {
            "loss": list(self.loss),
            "final_loss": self.final_loss,
            "converged": self.converged,
            "svi_start": self.start,
        }

    @classmethod
    def from_dict(cls, d: dict) -> SVIInfo:
        return cls(
            _floats(d.get("loss")) or (), float(d["final_loss"]), bool(d["converged"]), d.get("svi_start", "laplace")
        )


@dataclasses.dataclass(frozen=True)
class NUTSInfo:
    """The No-U-Turn sampler.

    Attributes:
        num_chains, num_samples, num_warmup: the run's size (draws per chain).
        mass: the inverse mass matrix setting (``"laplace"`` or ``"adapt"``).
        divergences: divergent transitions after warm-up.
        mean_num_steps: mean leapfrog steps per draw.
        max_tree_depth: the tree-depth limit.
        tree_depth_saturated: share of draws that reached it.
        max_rhat: the largest split R-hat (None for one chain); rhat: per parameter.
        min_ess_bulk, min_ess_tail: the smallest bulk and tail ESS; ess_bulk: per parameter.
    """

    num_chains: int
    num_samples: int
    num_warmup: int
    mass: str
    divergences: int
    mean_num_steps: float
    max_tree_depth: int
    tree_depth_saturated: float
    max_rhat: float | None
    rhat: tuple[float, ...] | None
    min_ess_bulk: float
    min_ess_tail: float
    ess_bulk: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "num_chains": self.num_chains,
            "num_samples": self.num_samples,
            "num_warmup": self.num_warmup,
            "nuts_mass": self.mass,
            "divergences": self.divergences,
            "mean_num_steps": self.mean_num_steps,
            "max_tree_depth": self.max_tree_depth,
            "tree_depth_saturated": self.tree_depth_saturated,
            "min_ess_bulk": self.min_ess_bulk,
            "min_ess_tail": self.min_ess_tail,
            "ess_bulk": list(self.ess_bulk),
        }
        if self.max_rhat is not None:
            d["max_rhat"] = self.max_rhat
            d["rhat"] = list(self.rhat or ())
        return d

    @classmethod
    def from_dict(cls, d: dict) -> NUTSInfo:
        mr = d.get("max_rhat")
        return cls(
            int(d["num_chains"]),
            int(d["num_samples"]),
            int(d["num_warmup"]),
            d["nuts_mass"],
            int(d["divergences"]),
            float(d["mean_num_steps"]),
            int(d["max_tree_depth"]),
            float(d["tree_depth_saturated"]),
            None if mr is None else float(mr),
            _floats(d.get("rhat")),
            float(d["min_ess_bulk"]),
            float(d["min_ess_tail"]),
            _floats(d.get("ess_bulk")) or (),
        )


@dataclasses.dataclass(frozen=True)
class ClosedFormInfo:
    """The exact Gaussian posterior of 3D landmarks (nothing to diagnose)."""

    def to_dict(self) -> dict[str, Any]:
        return {}

    @classmethod
    def from_dict(cls, d: dict) -> ClosedFormInfo:
        return cls()


MethodInfo = LaplaceInfo | ImportanceInfo | SVIInfo | NUTSInfo | ClosedFormInfo
_INFO: dict[str, Any] = {
    "laplace": LaplaceInfo,
    "importance": ImportanceInfo,
    "svi": SVIInfo,
    "nuts": NUTSInfo,
    "closed_form": ClosedFormInfo,
}


@dataclasses.dataclass(frozen=True)
class Diagnostics:
    """What an inference run reports.

    Attributes:
        method: ``"nuts"``, ``"svi"``, ``"laplace"``, ``"importance"`` or ``"closed_form"``.
        n_data: scalar data the likelihoods count.
        n_params: free parameters (shape modes, pose, noise scales).
        info: the method's record.
        map: the MAP fit (None for the closed form).
        wall_time_s: wall time of the whole run, seconds.
        warnings: every warning the run raised (bad diagnostics, misfit, overflow).
    """

    method: str
    n_data: int
    n_params: int
    info: MethodInfo
    map: MapInfo | None = None
    wall_time_s: float = 0.0
    warnings: tuple[str, ...] = ()

    def to_dict(self, *, compact: bool = False) -> dict[str, Any]:
        """The JSON form: flat keys (``max_rhat``, ``map_newton_decrement``, ...). ``compact``
        leaves out the per-step and per-parameter lists (loss, R-hat, ESS)."""
        d: dict[str, Any] = {"method": self.method, "n_data": self.n_data, "n_params": self.n_params}
        if self.map is not None:
            d.update(self.map.to_dict())
        d.update(self.info.to_dict())
        d["wall_time_s"] = self.wall_time_s
        d["warnings"] = list(self.warnings)
        if compact:
            for k in ("loss", "rhat", "ess_bulk"):
                d.pop(k, None)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Diagnostics:
        """The record from its :meth:`to_dict` form (``ValueError`` naming what is missing)."""
        try:
            method = d["method"]
            info = _INFO[method].from_dict(d)
            return cls(
                method,
                int(d["n_data"]),
                int(d["n_params"]),
                info,
                MapInfo.from_dict(d),
                float(d.get("wall_time_s", 0.0)),
                tuple(str(w) for w in d.get("warnings", ())),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"diagnostics: not a bayesshape diagnostics record ({type(e).__name__}: {e})") from None


def sampler_warnings(info: MethodInfo, *, emit: bool = True) -> tuple[str, ...]:
    """The warnings a method's diagnostics call for (emitted as ``UserWarning`` with ``emit``)."""
    msgs = []
    if isinstance(info, NUTSInfo):
        if info.max_rhat is not None and info.max_rhat > 1.01:
            msgs.append(
                f"R-hat {info.max_rhat:.3f} > 1.01: chains disagree; run longer (num_samples, "
                "NUTS(num_warmup=...)) or check for a multimodal posterior"
            )
        if info.min_ess_bulk < 100:
            msgs.append(f"bulk ESS {info.min_ess_bulk:.0f} < 100: too few effective samples; run longer")
        if info.divergences > 0:
            msgs.append(
                f"{info.divergences} divergent transitions: the posterior has regions NUTS cannot "
                "explore; raise NUTS(target_accept_prob=...) (e.g. 0.95), or check for contradicting "
                "observations"
            )
        if info.tree_depth_saturated > 0.01:
            d = info.max_tree_depth
            msgs.append(
                f"{info.tree_depth_saturated:.0%} of NUTS draws reached the maximum tree depth {d} "
                f"({2 ** (d - 1)} to {2**d - 1} gradients each): the step size is small against the "
                "posterior's extent (a log density rough at the step's scale, e.g. observations the model "
                "cannot explain, or a poor mass matrix), so draws are slow and the chains may not mix; "
                "check the misfit warnings, try NUTS(mass='adapt') with a longer warm-up, or "
                "method='laplace'"
            )
    if isinstance(info, ImportanceInfo):
        if info.khat > 0.7:
            msgs.append(
                f"importance sampling: Pareto k-hat {info.khat:.2f} > 0.7: a few draws carry the "
                "weight and the posterior is far from the Laplace Gaussian; raise Importance(rounds=...), "
                "or use NUTS"
            )
        elif info.ess < 100:
            msgs.append(
                f"importance sampling: ESS {info.ess:.0f} < 100; raise Importance(samples=...) or "
                "Importance(rounds=...), or use NUTS"
            )
    if isinstance(info, SVIInfo) and not info.converged:
        msgs.append("SVI did not converge (loss still changing); raise SVI(steps=...) or lower SVI(learning_rate=...)")
    if emit:
        for m in msgs:
            warnings.warn(m, UserWarning, stacklevel=3)
    return tuple(msgs)


def ess_bulk_tail(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bulk and tail effective sample size per parameter of ``(chains, draws, dim)`` samples.

    Bulk: NumPyro's multi-chain ESS. Tail: the smaller ESS of the indicators of the 5% and
    95% quantiles (Vehtari et al. 2021). Like Stan and ArviZ, the integrated autocorrelation
    time is kept at or above ``1 / log10(chains * draws)``, i.e. an ESS at most
    ``chains * draws * log10(chains * draws)``: NumPyro's raw estimate turns negative for
    strongly anti-correlated draws (an alternating chain), which are in fact super-efficient.
    """
    from numpyro.diagnostics import effective_sample_size

    th = np.asarray(samples, dtype=np.float64)
    n = th.shape[0] * th.shape[1]
    cap = n * math.log10(max(n, 2))

    def capped(x):
        e = np.asarray(effective_sample_size(x), dtype=np.float64)
        return np.where((e < 0) | (e > cap), cap, e)

    q05, q95 = np.quantile(th, 0.05, axis=(0, 1)), np.quantile(th, 0.95, axis=(0, 1))
    tail = np.minimum(capped((th <= q05).astype(np.float64)), capped((th <= q95).astype(np.float64)))
    return capped(th), tail
