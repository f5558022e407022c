"""The one builder of the section-4 problems (retune_suite.operators.maps.section4), float64, small.

The step, θ, x₀, loss and read-out are compared, bit for bit, with the construction the error
study, the benchmarks and Algorithm 1's training each wrote out before the builder existed
(rebuilt here from the pieces in operators/), so that moving them onto it changed nothing but
the peers bench's start (θ₀Dy → Dy, the paper's x₀).
"""

from __future__ import annotations

import pytest
import torch
from retune_suite.operators.errors import InvalidInputError
from retune_suite.operators.maps import section4
from retune_suite.operators.maps.physics import make_forward_model
from retune_suite.operators.maps.pnp import (
    fb_pnp_sigma_tau,
    fb_pnp_weights,
    load_drunet,
    sigma_tau_theta,
)
from retune_suite.operators.maps.wavelet_prior import WaveletFB, init_theta

TASKS = ("denoise", "inpaint", "deblur")
SIZE, BATCH, SEED = 32, 2, 3


@pytest.fixture(scope="module")
def clean() -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.rand(BATCH, 3, SIZE, SIZE, generator=generator, dtype=torch.float64)


@pytest.fixture(scope="module")
def denoiser() -> torch.nn.Module:
    """A tiny DRUNet, its random weights drawn from a seeded RNG (not the global one's state)."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return load_drunet(channels=3, nc=(8, 16, 32, 64), nb=1, dtype=torch.float64)


def _old(task: str, prior: str, clean: torch.Tensor, denoiser, log_lambda=-2.0):
    """The construction of experiments/errors.py (Study) and benchmarks/common.py as they were:
    (step, θ, x₀, loss) on observations drawn with a generator seeded by SEED."""
    model = make_forward_model(task, 3, (SIZE, SIZE), dtype=torch.float64, seed=SEED)
    y = model.observe(clean, torch.Generator().manual_seed(SEED))
    if prior == "pnp":
        step = fb_pnp_sigma_tau(model, y, denoiser)
        theta = sigma_tau_theta(0.05, 1.0, dtype=torch.float64)

        def loss_x(x):
            return 0.5 * ((x - clean) ** 2).sum()

        return step, theta, model.A_adjoint(y), loss_x, y
    fb = WaveletFB(y, prior=prior.split("-")[1], model=None if task == "denoise" else model)
    theta = init_theta(fb.prior, fb.levels, 3, log_lambda=log_lambda, dtype=torch.float64)
    w0 = fb.weights(theta).detach()

    def loss_u(u):
        return 0.5 * ((fb.D.synthesis(u / w0) - clean) ** 2).sum()

    return fb.step, theta, fb.initial(), loss_u, y


def _equal(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    return len(a) == len(b) and all(torch.equal(x, z) for x, z in zip(a, b, strict=True))


@pytest.mark.parametrize("prior", ["wavelet-B", "wavelet-BC", "pnp"])
@pytest.mark.parametrize("task", TASKS)
def test_the_step_is_the_one_the_old_code_built(task, prior, clean, denoiser):
    step, theta, x0, loss, y = _old(task, prior, clean, denoiser)
    p = section4.build(task, prior, clean=clean, seed=SEED, denoiser=denoiser)
    assert torch.equal(p.y, y)
    assert _equal(p.theta, theta)
    assert torch.equal(p.x0, x0)
    x = x0 + 0.01 * torch.randn(x0.shape, generator=torch.Generator().manual_seed(1))
    assert torch.equal(p.step(x, p.theta), step(x, theta))
    assert torch.equal(p.loss(x), loss(x))


@pytest.mark.parametrize("prior", ["wavelet-B", "wavelet-BC", "pnp-sigma-tau", "pnp-weights"])
@pytest.mark.parametrize("task", TASKS)
def test_shapes_and_structure(task, prior, clean, denoiser):
    p = section4.build(task, prior, clean=clean, seed=SEED, denoiser=denoiser)
    assert p.task == task and p.prior == prior and p.y.shape == clean.shape
    assert p.x0.shape == clean.shape and p.x0.dtype == torch.float64
    assert p.step(p.x0, p.theta).shape == p.x0.shape
    assert p.loss(p.x0).shape == ()
    assert p.estimate(p.x0).shape == clean.shape
    if prior.startswith("wavelet"):
        n_lambda, Lam = p.theta
        assert n_lambda.shape == (4,) and Lam.shape == ((3,) if prior == "wavelet-B" else (3, 3))
        assert p.has_bounds and p.readout is not None
    else:
        assert not p.has_bounds and p.readout is None and p.fb is None
        assert p.omega is None and p.delta(3) is None
    if prior == "pnp-sigma-tau":
        assert p.theta.shape == (2,)
    if prior == "pnp-weights":
        assert len(p.theta) == len(list(denoiser.parameters()))


@pytest.mark.parametrize("prior", ["wavelet-B", "wavelet-BC"])
def test_start_is_the_papers_x0_whatever_theta(prior, clean):
    """x₀ = D Aᵀy (Dy for denoising, after eq. (52)), the same for every θ."""
    for task in TASKS:
        a = section4.build(task, prior, clean=clean, seed=SEED, log_lambda=-2.0)
        b = section4.build(task, prior, clean=clean, seed=SEED, log_lambda=-0.5)
        aty = a.y if task == "denoise" else a.physics.A_adjoint(a.y)
        assert torch.equal(a.x0, a.fb.D.analysis(aty))
        assert torch.equal(a.x0, b.x0)


def test_pnp_starts_from_the_adjoint(clean, denoiser):
    p = section4.build("inpaint", "pnp", clean=clean, seed=SEED, denoiser=denoiser)
    assert torch.equal(p.x0, p.physics.A_adjoint(p.y))


def test_delta_is_analytic_for_denoising_only(clean):
    d = section4.build("denoise", "wavelet-BC", clean=clean)
    assert d.omega == d.fb.omega(d.theta) < 1
    assert d.delta(3) == d.omega**3
    for task in ("inpaint", "deblur"):
        assert section4.build(task, "wavelet-BC", clean=clean).delta(1) is None


def test_serves_training_batches(clean, denoiser):
    """Algorithm 1 gives y, the forward model and its own θ: they are used as given, and the
    step, x₀ and read-out are those of experiments' train.Problem.build (the same pieces)."""
    model = make_forward_model("deblur", 3, (SIZE, SIZE), dtype=torch.float64, seed=SEED)
    y = model.observe(clean, torch.Generator().manual_seed(7))
    theta = init_theta("BC", 4, 3, log_lambda=0.0, dtype=torch.float64)
    p = section4.build("deblur", "wavelet-BC", y=y, physics=model, theta=theta)
    fb = WaveletFB(y, prior="BC", model=model)
    assert p.y is y and p.physics is model and p.theta is theta and p.loss is None
    u = fb.initial() + 0.1
    assert torch.equal(p.x0, fb.initial())
    assert torch.equal(p.step(u, theta), fb.step(u, theta))
    assert torch.equal(p.readout(u, theta), fb.estimate(u, theta))
    step, weights = fb_pnp_weights(model, y, denoiser, 0.05, 1.0)
    q = section4.build(
        "deblur", "pnp-weights", y=y, physics=model, denoiser=denoiser, pnp_sigma=0.05
    )
    assert _equal(q.theta, weights)
    x = model.A_adjoint(y)
    assert torch.equal(q.step(x, q.theta), step(x, weights))


def test_bad_input_names_the_fix(clean):
    with pytest.raises(InvalidInputError, match="unknown task"):
        section4.build("segment", "wavelet-BC", clean=clean)
    with pytest.raises(InvalidInputError, match="unknown prior"):
        section4.build("denoise", "tv", clean=clean)
    with pytest.raises(InvalidInputError, match="clean images"):
        section4.build("denoise", "wavelet-BC")
    with pytest.raises(InvalidInputError, match="needs a DRUNet"):
        section4.build("denoise", "pnp", clean=clean)
    with pytest.raises(InvalidInputError, match=r"\(B, C, H, W\)"):
        section4.build("denoise", "wavelet-BC", clean=clean[0])


def test_peers_bench_starts_where_the_error_study_does():
    """The same crops, noise and map: the bench's x₀ is the error study's (no more θ₀Dy)."""
    from retune_suite.experiments.bench import Bench, BenchConfig
    from retune_suite.experiments.error_study import ErrorStudyConfig, Study
    from retune_suite.experiments.error_study.study import Metrics

    cpu = torch.device("cpu")
    bench = Bench(BenchConfig(size=SIZE, batch=1, seed=SEED), cpu)
    cfg = ErrorStudyConfig(size=SIZE, batch=1, seed=SEED, device="cpu", dtype="float32")
    study = Study(cfg, "denoise", "wavelet-BC", Metrics("unused.csv"))
    _, _, u0, _ = bench.problem("ours", torch.float32)
    assert torch.equal(u0, study.problem.x0)
    assert torch.equal(bench.y[torch.float32], study.problem.y)
    # the float64 reference starts from Dy of the same (float32) data, computed in float64
    _, _, u0, _ = bench.problem("ours", torch.float64)
    y64 = bench.y[torch.float64]
    assert torch.equal(y64, study.problem.y.double())
    assert torch.equal(u0, bench.ours[torch.float64].fb.D.analysis(y64))
