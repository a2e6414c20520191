r"""Sampler efficiency: NUTS against random-walk Metropolis-Hastings on the same posterior.

The headline setting (a held-out example shape, biplanar contours, rigid pose unknown):
the log density of bayesshape's whitened parameters is sampled by NumPyro's NUTS and by
BlackJAX's random-walk Metropolis-Hastings (the kind of sampler Scalismo uses), both
started at the MAP and both given the Laplace covariance (NUTS as its inverse mass matrix,
RW-MH as its proposal covariance scaled by 2.38^2 / dim, the optimal scaling for a
Gaussian target: a generous set-up for RW-MH). Each sampler runs once to compile, then
again timed. Reported: wall time, bulk and tail ESS (minimum and median over the
parameters), ESS per second, and the NUTS / RW-MH ratio of ESS per second, from the same run.

    python experiments/sampler_efficiency.py --quick --out out/sampler
    python experiments/sampler_efficiency.py --out out/sampler
    python experiments/sampler_efficiency.py --size 256 --chains 2 --warmup 200 --draws 500 \
        --rwmh-steps 20000 --out out/sampler_256     # the headline's 256 px at a CPU budget

``--size``, ``--chains``, ``--warmup``, ``--draws`` and ``--rwmh-steps`` override the chosen
setting's values. Both wall times include one compilation of the sampler for the run's lengths.

Needs BlackJAX (``pip install blackjax``; not a dependency of the package).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _cases import Case, make_views, move, observations  # noqa: E402

import bayesshape as bs  # noqa: E402
from bayesshape.inference import ess_bulk_tail as ess  # noqa: E402  (bulk/tail ESS as infer reports them)

SETTINGS = {
    "smoke": dict(size=64, nuts=(10, 10), rwmh=500, chains=1),
    "quick": dict(size=96, nuts=(100, 150), rwmh=6000, chains=2),
    "full": dict(size=256, nuts=(500, 1000), rwmh=100000, chains=4),
}


def run_nuts(logdensity, theta0, cov, key, warmup, samples, chains):
    from numpyro.infer import MCMC, NUTS

    from bayesshape.inference._numpyro import numpyro_promotion as _numpyro_promotion

    kernel = NUTS(
        potential_fn=lambda th: -logdensity(th), dense_mass=True, target_accept_prob=0.85, inverse_mass_matrix=cov
    )
    mcmc = MCMC(
        kernel, num_warmup=warmup, num_samples=samples, num_chains=chains, chain_method="sequential", progress_bar=False
    )
    starts = jax.random.multivariate_normal(key, theta0, cov, (chains,), method="eigh")
    with _numpyro_promotion():
        t0 = time.perf_counter()
        mcmc.run(key, init_params=starts if chains > 1 else starts[0], extra_fields=("num_steps",))
        wall = time.perf_counter() - t0
    steps = int(np.asarray(mcmc.get_extra_fields()["num_steps"]).sum())
    return np.asarray(mcmc.get_samples(group_by_chain=True)), wall, steps


def run_rwmh(logdensity, theta0, cov, key, n_steps, chains):
    import blackjax

    dim = theta0.shape[0]
    chol = jnp.linalg.cholesky((2.38**2 / dim) * cov)

    def proposal(k, position):
        return chol @ jax.random.normal(k, position.shape, dtype=position.dtype)

    kernel = blackjax.additive_step_random_walk(logdensity, proposal)

    @jax.jit
    def chain(k, start):
        def step(state, kk):
            state, info = kernel.step(kk, state)
            return state, (state.position, info.is_accepted)

        return jax.lax.scan(step, kernel.init(start), jax.random.split(k, n_steps))[1]

    keys = jax.random.split(key, chains + 1)
    starts = jax.random.multivariate_normal(keys[0], theta0, cov, (chains,), method="eigh")
    out, acc = [], []
    t0 = time.perf_counter()
    for c in range(chains):
        pos, accepted = chain(keys[c + 1], starts[c])
        out.append(np.asarray(pos))
        acc.append(float(np.asarray(accepted).mean()))
    wall = time.perf_counter() - t0
    burn = n_steps // 5
    return np.stack(out)[:, burn:], wall, float(np.mean(acc))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=int, help="detector pixels (default: the setting's)")
    ap.add_argument("--chains", type=int, help="chains of each sampler (default: the setting's)")
    ap.add_argument("--warmup", type=int, help="NUTS warm-up steps per chain (default: the setting's)")
    ap.add_argument("--draws", type=int, help="NUTS draws per chain (default: the setting's)")
    ap.add_argument(
        "--rwmh-steps", type=int, help="RW-MH steps per chain, the first fifth discarded (default: the setting's)"
    )
    ap.add_argument(
        "--prior-variance",
        choices=["sample", "loo"],
        default="loo",
        help="the PCA prior's mode variances (default: leave-one-out, as the calibration headline)",
    )
    args = ap.parse_args(argv)
    cfg = dict(SETTINGS["smoke" if args.smoke else "quick" if args.quick else "full"])
    for flag, val, lo in (
        ("size", args.size, 1),
        ("chains", args.chains, 1),
        ("warmup", args.warmup, 1),
        ("draws", args.draws, 1),
        ("rwmh-steps", args.rwmh_steps, 10),
    ):
        if val is not None and val < lo:
            ap.error(f"--{flag}: expected a count of at least {lo}, got {val}")
    w, s = cfg["nuts"]
    cfg.update(
        size=args.size or cfg["size"],
        chains=args.chains or cfg["chains"],
        nuts=(args.warmup or w, args.draws or s),
        rwmh=args.rwmh_steps or cfg["rwmh"],
    )
    args.out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    model = bs.build_pca_model(bs.datasets.example_shapes(20, seed=0), align="rigid", variance=args.prior_variance)
    views = make_views(2, cfg["size"])
    case = Case("heldout0", "held_out", move(bs.datasets.example_shapes(1, seed=1000)[0], rng), views, views)
    obs, _ = observations(case, args.seed)
    post = bs.infer(model, obs, method="laplace", pose="rigid", seed=args.seed, progress=False)
    problem, (theta_map, cov) = post.problem, post.gaussian
    logdensity = jax.jit(lambda th: problem.log_density(th))
    key_n, key_r = jax.random.split(jax.random.key(args.seed))
    w, s = cfg["nuts"]
    # compile runs (short), then the timed runs
    run_nuts(logdensity, theta_map, cov, key_n, 5, 5, 1)
    run_rwmh(logdensity, theta_map, cov, key_r, 10, 1)
    nuts, nuts_wall, nuts_steps = run_nuts(logdensity, theta_map, cov, key_n, w, s, cfg["chains"])
    rw, rw_wall, rw_acc = run_rwmh(logdensity, theta_map, cov, key_r, cfg["rwmh"], cfg["chains"])
    res = {
        "setting": f"held-out example shape, biplanar contours {cfg['size']} px, rigid pose, "
        f"dim {problem.dim}, {cfg['chains']} chains, sequential, {jax.default_backend()}, "
        f"prior variance {args.prior_variance}"
    }
    for name, smp, wall in (("nuts", nuts, nuts_wall), ("rwmh", rw, rw_wall)):
        bulk, tail = ess(smp)
        res[name] = {
            "wall_s": wall,
            "draws_per_chain": int(smp.shape[1]),
            "ess_bulk_min": float(bulk.min()),
            "ess_bulk_median": float(np.median(bulk)),
            "ess_tail_min": float(tail.min()),
            "ess_bulk_min_per_s": float(bulk.min() / wall),
            "ess_tail_min_per_s": float(tail.min() / wall),
        }
    res["nuts"]["gradient_evaluations"] = nuts_steps
    res["nuts"]["warmup"] = w
    res["rwmh"]["acceptance"] = rw_acc
    res["rwmh"]["steps_per_chain"] = cfg["rwmh"]
    res["ratio_bulk_ess_per_s"] = res["nuts"]["ess_bulk_min_per_s"] / max(res["rwmh"]["ess_bulk_min_per_s"], 1e-12)
    res["ratio_tail_ess_per_s"] = res["nuts"]["ess_tail_min_per_s"] / max(res["rwmh"]["ess_tail_min_per_s"], 1e-12)
    from bayesshape.export import write_json

    write_json(args.out / "sampler_efficiency.json", res)
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
