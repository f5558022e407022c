r"""deepinv's rows: PGD with its wavelet prior under a DEQ backward (IFT, Jacobian-free).

``optim_builder("PGD", prior=WaveletPrior(...), ..., DEQ=DEQConfig(...))``, λ trainable,
with the IFT backward (fixed-point iteration, Anderson off, ``backward_iters`` iterations:
``thres_conv = 0`` so it cannot stop early), with ``jacobian_free=True``, and the IFT run to
``thres_conv = solve_tol``. deepinv iterates the ptwt map (:class:`.ptwt_map.PtwtFB`) when
given λ/0.1 (:data:`DEEPINV_THS`): :func:`check_map` checks it before anything is timed.

deepinv is imported inside the functions (this module's name does not shadow it: imports are
absolute), so the bench runs, with ``not installed`` rows, where deepinv is missing.
"""

from __future__ import annotations

import torch
from retune_suite.operators.errors import RetuneError

from .config import LEVELS, TOL_CAP, WAVELET
from .problem import Bench, Call, Spec, flat, library, rel

__all__ = ["AGREE_RTOL", "DEEPINV_THS", "check_map", "specs"]

DEEPINV_THS = 0.1
"""deepinv 0.5's ``WaveletPrior.prox`` default ``ths``: PGD passes its ``g_param`` in
``*args``, where it is ignored, so the threshold is always ``0.1·λ·γ``: pass ``λ/0.1``."""
AGREE_RTOL = 1e-4
"""Agreement asked of deepinv's iterates and :class:`PtwtFB`'s (float32 rounding, 3 steps)."""


def _gradient(
    bench: Bench,
    *,
    jacobian_free: bool,
    max_backward: int,
    thres: float,
    anderson_backward: bool = False,
) -> Call:
    from deepinv.optim import DEQConfig, optim_builder
    from deepinv.optim.data_fidelity import L2
    from deepinv.optim.prior import WaveletPrior
    from deepinv.physics import Denoising

    f32, device = torch.float32, bench.device
    prior = WaveletPrior(level=LEVELS, wv=WAVELET, p=1, device=device)
    prior.prox = bench.counter.wrap(prior.prox)
    model = optim_builder(
        "PGD",
        prior=prior,
        data_fidelity=L2(),
        max_iter=bench.cfg.steps,
        params_algo={
            "stepsize": bench.gamma,
            # λ/0.1 (DEEPINV_THS); shape (1, 1): a 0-dim trainable λ breaks deepinv's
            # cost evaluation (flatten(1, -1)), computed at every iteration
            "lambda": [torch.tensor([[bench.lam / DEEPINV_THS]])],
        },
        trainable_params=["lambda"],
        DEQ=DEQConfig(
            jacobian_free=jacobian_free,
            # Anderson's history, β and ε: deepinv's defaults (5, 1.0, 1e-4)
            anderson_acceleration_backward=anderson_backward,
            max_iter_backward=max_backward,
        ),
        anderson_acceleration=False,
        thres_conv=thres,  # only the backward fixed point reads it (early_stop=False)
    ).to(device)
    physics = Denoising(device=device)
    param = model.params_algo["lambda"][0]
    y, loss = bench.y[f32], bench.problem("ptwt", f32)[3]

    def run() -> tuple[torch.Tensor, torch.Tensor]:
        param.grad = None
        x = model(y, physics)
        loss(x).backward()
        # ∂L/∂λ = ∂L/∂(λ/0.1) / 0.1: the gradient in the ptwt map's λ
        return flat(param.grad / DEEPINV_THS), x.detach()

    return run


def specs(bench: Bench) -> list[Spec]:
    """deepinv's four rows on the ptwt map."""
    cfg, b = bench.cfg, bench.cfg.backward_iters
    lib, req = library("deepinv"), ("deepinv", "ptwt")
    return [
        Spec(
            f"deepinv DEQ (FP {b})",
            lib,
            "ptwt",
            "ift",
            req,
            lambda: _gradient(bench, jacobian_free=False, max_backward=b, thres=0.0),
            output_steps=cfg.steps + 1,  # a no-grad solve of steps, then one step with grad
        ),
        Spec(
            f"deepinv DEQ (Anderson {b})",
            lib,
            "ptwt",
            "ift",
            req,
            lambda: _gradient(
                bench, jacobian_free=False, max_backward=b, thres=0.0, anderson_backward=True
            ),
            output_steps=cfg.steps + 1,  # a no-grad solve of steps, then one step with grad
        ),
        Spec(
            "deepinv Jacobian-free",
            lib,
            "ptwt",
            "one-step",
            req,
            lambda: _gradient(bench, jacobian_free=True, max_backward=b, thres=0.0),
            output_steps=cfg.steps + 1,  # a no-grad solve of steps, then one step with grad
        ),
        Spec(
            f"deepinv DEQ (FP→{cfg.solve_tol:.0e})",
            lib,
            "ptwt",
            "ift",
            req,
            lambda: _gradient(
                bench, jacobian_free=False, max_backward=TOL_CAP * b, thres=cfg.solve_tol
            ),
            cap=TOL_CAP * b,
            once=True,
            output_steps=cfg.steps + 1,  # a no-grad solve of steps, then one step with grad
        ),
    ]


def check_map(bench: Bench, steps: int = 3) -> None:
    """deepinv's PGD iterates against :class:`PtwtFB`'s, with λ/0.1 and with λ as given.

    Records both relative differences in ``bench.checks``. Raises :class:`RetuneError` when
    even λ/0.1 does not reproduce the map (a deepinv whose prox changed): timing it would
    compare another problem.
    """
    from deepinv.optim import optim_builder
    from deepinv.optim.data_fidelity import L2
    from deepinv.optim.prior import WaveletPrior
    from deepinv.physics import Denoising

    f32, device = torch.float32, bench.device
    step, lam, x, _ = bench.problem("ptwt", f32)
    with torch.no_grad():
        for _ in range(steps):
            x = step(x, lam)
        for name, value in (("lambda/0.1", bench.lam / DEEPINV_THS), ("lambda", bench.lam)):
            model = optim_builder(
                "PGD",
                prior=WaveletPrior(level=LEVELS, wv=WAVELET, p=1, device=device),
                data_fidelity=L2(),
                max_iter=steps,
                params_algo={"stepsize": bench.gamma, "lambda": value},
            ).to(device)
            out = model(bench.y[f32], Denoising(device=device))
            bench.checks[f"deepinv_vs_ptwt_map_{steps}_steps_{name}"] = rel(out, x)
    if bench.checks[f"deepinv_vs_ptwt_map_{steps}_steps_lambda/0.1"] > AGREE_RTOL:
        raise RetuneError(
            "deepinv's PGD with WaveletPrior does not iterate the ptwt map even with "
            "lambda/0.1: its prox has changed; check deepinv's version before timing it."
        )
