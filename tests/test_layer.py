"""Bring your own model (issue 25, item 1; issue 26, item 6): steps that differentiate inside,
steps that close over ``nn.Module``s, the ``DEQ`` module, read-out-only θ entries, forward mode
and torch.func through the implicit backward, non-convergence, θ without requires_grad.

Float64, problems of a few coordinates. Each test names the defect of the issue it pins; on the
code before the issue each one failed (the message blamed shapes, or the gradient was refused
inside ``backward()``, or nothing was said).
"""

from __future__ import annotations

import logging
import warnings

import pytest
import torch
import torch.autograd.forward_ad as fwAD
from retune_suite.operators import (
    InvalidInputError,
    NotContractiveError,
    fixed_point,
    hypergrad,
    restart,
)
from retune_suite.operators.equilibrium import BACKWARDS, DEQ, equilibrium
from retune_suite.operators.errors import NonConvergenceWarning

IMPLICIT = ("jfb", "neumann", "deq")
RTOL = 1e-10  # two computations of one gradient in float64 (conftest's table)

A = torch.tensor([[2.0, 0.3, 0.0], [0.3, 1.0, 0.2], [0.0, 0.2, 1.5]], dtype=torch.float64)
TARGET = torch.tensor([0.5, -1.0, 0.25], dtype=torch.float64)
LR = 0.3


def energy(x: torch.Tensor, theta) -> torch.Tensor:
    """E(x, θ) = ½xᵀAx + θ₂ Σ log cosh x − θ₁ᵀx: smooth, strongly convex."""
    return 0.5 * x @ A @ x + theta[1] * torch.log(torch.cosh(x)).sum() - theta[0] @ x


def energy_step(x: torch.Tensor, theta) -> torch.Tensor:
    """x − lr ∇E(x, θ) the way bilevel code writes it (hypertorch's form)."""
    (g,) = torch.autograd.grad(energy(x, theta), x, create_graph=True)
    return x - LR * g


def explicit_step(x: torch.Tensor, theta) -> torch.Tensor:
    """The same map with ∇E written out: the reference."""
    return x - LR * (A @ x + theta[1] * torch.tanh(x) - theta[0])


def loss(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * ((x - TARGET) ** 2).sum()


THETA = (
    torch.tensor([1.0, -0.5, 0.3], dtype=torch.float64),
    torch.tensor(0.4, dtype=torch.float64),
)
X0 = torch.zeros(3, dtype=torch.float64)


def assert_close(got, want, rtol: float = RTOL) -> None:
    got = (got,) if isinstance(got, torch.Tensor) else tuple(got)
    want = (want,) if isinstance(want, torch.Tensor) else tuple(want)
    for a, b in zip(got, want, strict=True):
        scale = max(1.0, float(torch.linalg.vector_norm(b)))
        assert float(torch.linalg.vector_norm(a - b)) <= rtol * scale, (a, b)


def estimator(name: str, step, theta, x0, K: int = 2, T: int = 6):
    """One estimator of hypergrad by name (x̂ solved first for the fixed-point ones)."""
    if name in ("retune", "unrolled"):
        return getattr(hypergrad, name)(step, theta, x0, loss, K, T)
    x_star = fixed_point(step, theta, x0, K).x
    if name == "deq_neumann":
        return hypergrad.deq_neumann(step, theta, x_star, loss, K, 4)
    return getattr(hypergrad, name)(step, theta, x_star, loss, K)


ESTIMATORS = ("deq_exact", "deq_solve", "deq_neumann", "jfb", "retune", "unrolled")


# --- steps that differentiate inside --------------------------------------------------------


@pytest.mark.parametrize("name", ESTIMATORS)
def test_energy_step_in_every_estimator(name):
    """Issue 25: an energy-gradient step crashed in fixed_point, restart, retune(T > 1) and
    unrolled ("Give x0 the shape the step expects"); it now gives the explicit step's gradient."""
    assert_close(estimator(name, energy_step, THETA, X0), estimator(name, explicit_step, THETA, X0))


def test_energy_step_in_restart_and_fixed_point():
    got, want = restart(energy_step, THETA, X0, 2, 5), restart(explicit_step, THETA, X0, 2, 5)
    assert_close((got.x, got.x_prev), (want.x, want.x_prev))
    assert not got.x.requires_grad
    for method in ("picard", "anderson", "broyden"):
        got_fp = fixed_point(energy_step, THETA, X0, 1, method=method).x
        assert_close(got_fp, fixed_point(explicit_step, THETA, X0, 1, method=method).x, 1e-12)


@pytest.mark.parametrize("backward", BACKWARDS)
def test_energy_step_in_equilibrium(backward):
    grads = []
    for step in (energy_step, explicit_step):
        theta = tuple(t.clone().requires_grad_(True) for t in THETA)
        loss(equilibrium(step, theta, X0, K=1, T=8, backward=backward, P=5)).backward()
        grads.append(tuple(t.grad for t in theta))
    assert_close(grads[0], grads[1])


def test_declared_autograd_step_is_not_tried_without():
    """A step may declare ``uses_autograd = True``: its first call is then never made under
    no_grad (no failed attempt)."""
    calls = []

    def step(x, theta):
        calls.append(torch.is_grad_enabled())
        return energy_step(x, theta)

    step.uses_autograd = True
    restart(step, THETA, X0, 1, 3)
    assert calls == [True, True, True]


def test_step_without_autograd_runs_under_no_grad():
    """A step that does not differentiate is called exactly as before: under no_grad."""
    seen = []

    def step(x, theta):
        seen.append(torch.is_grad_enabled())
        return explicit_step(x, theta)

    restart(step, THETA, X0, 2, 3)
    fixed_point(step, THETA, X0, 1)
    assert not any(seen)


def test_autograd_error_inside_a_step_is_named():
    def bad(x, theta):  # differentiates with respect to a tensor it never used
        (g,) = torch.autograd.grad(energy(x, theta), torch.zeros(3, requires_grad=True))
        return x - g

    with pytest.raises(InvalidInputError, match=r"failed inside torch\.autograd"):
        restart(bad, THETA, X0, 1, 2)


# --- steps that close over nn.Modules -------------------------------------------------------


def _module_problem():
    torch.manual_seed(0)
    layer = torch.nn.Linear(3, 3).double()
    with torch.no_grad():
        layer.weight.mul_(0.4)
    x = torch.tensor([0.3, -0.2, 0.7], dtype=torch.float64)

    def closure(z, theta):  # uses layer's own parameters, not theta
        return torch.tanh(layer(z) + x)

    def functional(z, theta):  # the same map with θ explicit (the reference)
        return torch.tanh(torch.nn.functional.linear(z, theta[0], theta[1]) + x)

    return layer, closure, functional


@pytest.mark.parametrize("backward", BACKWARDS)
def test_module_closure_same_gradient_in_every_mode(backward):
    """Issue 25: a step closing over an nn.Module was refused by jfb, neumann and deq inside
    loss.backward(); it now gets the estimator's gradient, as with θ passed explicitly."""
    layer, closure, functional = _module_problem()
    theta = tuple(layer.parameters())
    x0 = torch.zeros(3, dtype=torch.float64)
    loss(equilibrium(closure, theta, x0, K=1, T=12, backward=backward, P=6)).backward()
    got = tuple(p.grad for p in theta)
    reference = {"deq": "deq_solve", "neumann": "deq_neumann"}.get(backward, backward)
    detached = tuple(p.detach() for p in theta)
    if backward in ("retune", "unrolled"):
        want = getattr(hypergrad, reference)(functional, detached, x0, loss, 1, 12)
    else:
        x_star = fixed_point(functional, detached, x0, 1).x
        args = (6,) if backward == "neumann" else ()
        want = getattr(hypergrad, reference)(functional, detached, x_star, loss, 1, *args)
    assert_close(got, want)


def test_module_closure_deq_against_finite_differences():
    """The implicit gradient of a module closure against central differences of L(x̂(θ))."""
    layer, closure, _ = _module_problem()
    x0 = torch.zeros(3, dtype=torch.float64)
    loss(equilibrium(closure, tuple(layer.parameters()), x0, K=1, backward="deq")).backward()
    h = 1e-6
    with torch.no_grad():
        for param in layer.parameters():
            flat = param.view(-1)
            for i in range(flat.numel()):
                flat[i] += h
                up = loss(fixed_point(closure, tuple(layer.parameters()), x0, 1).x)
                flat[i] -= 2 * h
                down = loss(fixed_point(closure, tuple(layer.parameters()), x0, 1).x)
                flat[i] += h
                fd = float((up - down) / (2 * h))
                assert abs(float(param.grad.view(-1)[i]) - fd) <= 1e-7 * max(1.0, abs(fd))


@pytest.mark.parametrize("backward", BACKWARDS)
def test_deq_module_equals_equilibrium(backward):
    """DEQ(cell)(z0, x): the layer as a module; the gradient reaches the cell's weights and the
    injected input, as equilibrium's with a closure does."""
    torch.manual_seed(1)
    cell = _Cell().double()
    x = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    z0 = torch.zeros(2, 3, dtype=torch.float64)
    T = 10 if backward in ("retune", "unrolled") else None
    deq = DEQ(cell, backward=backward, T=T, P=5 if backward == "neumann" else None)
    loss(deq(z0, x)).backward()
    got = (*(p.grad.clone() for p in cell.parameters()), x.grad.clone())
    assert deq.stats is not None
    if backward not in ("retune", "unrolled"):
        assert deq.stats.sample_converged.tolist() == [True, True]
    for p in (*cell.parameters(), x):
        p.grad = None
    theta = (*cell.parameters(), x)
    solver = "picard" if backward in ("retune", "unrolled") else "anderson"
    z = equilibrium(lambda z, th: cell(z, x), theta, z0, K=1, T=T, backward=backward,
                    P=5, forward_solver=solver, batch_dim=0)  # fmt: skip
    loss(z).backward()
    assert_close(got, (*(p.grad for p in cell.parameters()), x.grad))


class _Cell(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 3)
        with torch.no_grad():
            self.lin.weight.mul_(0.4)

    def forward(self, z, x):
        return torch.tanh(self.lin(z) + x)


def test_deq_module_bad_options():
    with pytest.raises(InvalidInputError, match=r"nn\.Module"):
        DEQ(lambda z: z)
    with pytest.raises(InvalidInputError, match="unknown option"):
        DEQ(_Cell(), tolerance=1e-3)
    with pytest.raises(InvalidInputError, match="needs T"):
        DEQ(_Cell(), backward="retune")
    with pytest.raises(InvalidInputError, match="Picard restarts"):
        DEQ(_Cell(), backward="retune", T=3, forward_solver="anderson")


# --- read-out-only θ entries ----------------------------------------------------------------


def _readout_problem():
    def step(x, theta):  # θ[1] is not used by the step
        return 0.5 * x + theta[0]

    def readout(u, theta):
        return theta[1] * u

    theta = (torch.tensor(1.0, dtype=torch.float64), torch.tensor(2.0, dtype=torch.float64))
    return step, readout, theta


@pytest.mark.parametrize("name", ESTIMATORS)
def test_readout_only_theta_gets_the_direct_term(name):
    """Issue 25: "theta[1] has no gradient path through step" in every estimator; θ[1] used by
    the read-out only now gets its direct term ∂_θ₁ L(R(û, θ)) = (θ₁û − 1)û."""
    step, readout, theta = _readout_problem()
    x0 = torch.full((1,), 2.0, dtype=torch.float64)  # the fixed point û = 2θ₀ = 2

    def read_loss(x):
        return 0.5 * ((x - 1.0) ** 2).sum()

    K, T = 1, 3
    if name in ("retune", "unrolled"):
        grad = getattr(hypergrad, name)(step, theta, x0, read_loss, K, T, readout=readout)
    else:
        args = (2,) if name == "deq_neumann" else ()
        grad = getattr(hypergrad, name)(step, theta, x0, read_loss, K, *args, readout=readout)
    assert float(grad[1]) == pytest.approx((2.0 * 2.0 - 1.0) * 2.0, rel=1e-12)


def test_theta_used_by_neither_step_nor_readout_is_refused():
    step, _, theta = _readout_problem()
    x0 = torch.full((1,), 2.0, dtype=torch.float64)
    with pytest.raises(InvalidInputError, match=r"theta\[1\] has no gradient path"):
        hypergrad.jfb(step, theta, x0, loss, 1, readout=lambda u, th: u)


@pytest.mark.parametrize("backward", BACKWARDS)
def test_readout_only_theta_in_equilibrium(backward):
    step, readout, theta = _readout_problem()
    params = tuple(t.clone().requires_grad_(True) for t in theta)
    x = equilibrium(step, params, torch.zeros(1, dtype=torch.float64), K=1, T=80,
                    backward=backward, P=3)  # fmt: skip
    (0.5 * ((readout(x, params) - 1.0) ** 2).sum()).backward()
    assert float(params[1].grad) == pytest.approx(6.0, rel=1e-9)


# --- forward mode and torch.func ------------------------------------------------------------


def _transform_problem():
    torch.manual_seed(0)
    W = 0.3 * torch.randn(3, 3, dtype=torch.float64)
    b = torch.randn(3, dtype=torch.float64)

    def step(x, theta):
        return torch.tanh(theta[0] @ x + theta[1])

    return step, (W, b)


@pytest.mark.parametrize("backward", BACKWARDS)
def test_forward_mode_and_torch_func(backward):
    """Issue 25: torch.autograd.forward_ad, torch.func.jacrev and jacfwd failed through the
    implicit backward; every mode now agrees with its own reverse-mode gradient."""
    step, theta = _transform_problem()
    x0 = torch.zeros(3, dtype=torch.float64)
    kwargs = {"K": 1, "T": 20, "backward": backward, "P": 20}
    params = tuple(t.clone().requires_grad_(True) for t in theta)
    loss(equilibrium(step, params, x0, **kwargs)).backward()
    reverse = tuple(p.grad for p in params)
    v = (torch.randn(3, 3, dtype=torch.float64), torch.randn(3, dtype=torch.float64))
    want = sum(float((g * t).sum()) for g, t in zip(reverse, v, strict=True))
    with fwAD.dual_level():
        dual = tuple(fwAD.make_dual(t, d) for t, d in zip(theta, v, strict=True))
        tangent = fwAD.unpack_dual(loss(equilibrium(step, dual, x0, **kwargs))).tangent
    assert float(tangent) == pytest.approx(want, rel=1e-9, abs=1e-12)

    def objective(W, b):
        return loss(equilibrium(step, (W, b), x0, **kwargs))

    for transform in (torch.func.grad, torch.func.jacrev, torch.func.jacfwd):
        assert_close(transform(objective, argnums=(0, 1))(*theta), reverse, 1e-9)


@pytest.mark.parametrize("backward", ["neumann", "deq"])
def test_second_order_is_refused(backward):
    step, theta = _transform_problem()
    x0 = torch.zeros(3, dtype=torch.float64)

    b = theta[1].clone().requires_grad_(True)

    def objective(W):
        return loss(equilibrium(step, (W, b), x0, K=1, backward=backward, P=5))

    with pytest.raises(InvalidInputError, match="second-order"):
        torch.func.hessian(objective)(theta[0])
    W = theta[0].clone().requires_grad_(True)
    (g,) = torch.autograd.grad(objective(W), W, create_graph=True)
    with pytest.raises(InvalidInputError, match="second-order"):
        g.sum().backward()


def test_vmap_is_refused_with_the_alternative():
    step, theta = _transform_problem()
    biases = torch.randn(4, 3, dtype=torch.float64)
    x0 = torch.zeros(3, dtype=torch.float64)

    def solve(b):
        return equilibrium(step, (theta[0], b), x0, K=1, backward="deq")

    with pytest.raises(InvalidInputError, match="batch_dim"):
        torch.func.vmap(solve)(biases)


# --- non-convergence, θ without requires_grad ------------------------------------------------


def _slow():
    return (lambda x, t: t * x + 1.0), torch.tensor(0.999, dtype=torch.float64, requires_grad=True)


def test_nonconvergence_raises_by_default():
    step, theta = _slow()
    with pytest.raises(NotContractiveError, match="did not converge in 50 blocks"):
        equilibrium(step, theta, torch.zeros(2, dtype=torch.float64), K=1, backward="deq",
                    max_blocks=50)  # fmt: skip


def test_nonconvergence_best_effort_is_warned_and_logged(caplog):
    step, theta = _slow()
    with caplog.at_level(logging.WARNING, logger="retune_suite.operators.iteration"):
        with pytest.warns(NonConvergenceWarning, match="best effort.*residual"):
            x, stats = equilibrium(step, theta, torch.zeros(2, dtype=torch.float64), K=1,
                                   backward="jfb", max_blocks=50, on_nonconvergence="warn",
                                   return_stats=True)  # fmt: skip
    assert not stats.converged and stats.sample_reasons == ("max_blocks",)
    assert stats.blocks == 50 and torch.isfinite(x).all()
    assert "residual history" in caplog.text
    x.sum().backward()
    assert torch.isfinite(theta.grad)


def test_theta_without_requires_grad_is_named():
    """Issue 26: θ.grad stayed None while other parameters trained, and nothing said so."""
    a = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    b = torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64)  # forgot requires_grad

    def step(x, theta):
        return theta[0] * x + theta[1]

    x0 = torch.zeros(3, dtype=torch.float64)
    for backward in BACKWARDS:
        with pytest.warns(UserWarning, match=r"theta\[1\] \(shape \(3,\)\) does not require grad"):
            equilibrium(step, (a, b), x0, K=1, T=3, backward=backward, P=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with torch.no_grad():  # evaluation: nothing to warn about
            equilibrium(step, (a, b), x0, K=1, backward="deq")
        b.requires_grad_(True)
        equilibrium(step, (a, b), x0, K=1, backward="deq")


def test_fixed_point_zero_is_found():
    """Issue 25: x̂ = 0 raised NotContractiveError (relative tolerance only); the absolute
    tolerance (64 ulps of 10⁻⁶ of the start's scale) stops it."""
    before_limit = 8000  # 0.99ᵏ reaches the relative test only at underflow (k ≈ 3.7e4)
    fp = fixed_point(lambda x, t: t * x, torch.tensor(0.99, dtype=torch.float64),
                     torch.ones(3, dtype=torch.float64), 1, max_blocks=before_limit)  # fmt: skip
    assert fp.stats.converged and fp.stats.reason == "tolerance"
    assert float(fp.x.abs().max()) <= 64 * torch.finfo(torch.float64).eps * 1e-6 * 2 / 0.01
    explicit = fixed_point(lambda x, t: t * x, torch.tensor(0.5, dtype=torch.float64),
                           torch.ones(3, dtype=torch.float64), 1, atol=1e-3)  # fmt: skip
    assert explicit.stats.blocks < 20


# --- the docs page's convolutional DEQ against torchdeq --------------------------------------


def test_conv_deq_against_torchdeq():
    """docs/byom.md's Denoiser with torchdeq's get_deq (11 lines against 9) trains along the
    same losses as DEQ(backward="jfb"): torchdeq's default gradient is the one-step one."""
    torchdeq = pytest.importorskip("torchdeq")
    from tests.test_docs_examples import ROOT, run_page

    page = run_page(ROOT / "docs" / "byom.md")
    Cell, Denoiser, train = page["Cell"], page["Denoiser"], page["train"]

    class TorchDEQDenoiser(torch.nn.Module):
        def __init__(self, channels=4):
            super().__init__()
            self.encode = torch.nn.Conv2d(1, channels, 3, padding=1)
            self.cell = Cell(channels)
            self.deq = torchdeq.get_deq(f_solver="anderson")
            self.decode = torch.nn.Conv2d(channels, 1, 3, padding=1)

        def forward(self, noisy):
            x = self.encode(noisy)
            z, _ = self.deq(lambda z: self.cell(z, x), torch.zeros_like(x))
            return self.decode(z[-1])

    torch.manual_seed(1)
    theirs = train(TorchDEQDenoiser(), steps=8)
    torch.manual_seed(1)
    ours = train(Denoiser(backward="jfb"), steps=8)
    assert ours[-1] < 0.8 * ours[0]
    # torchdeq stops at its own tolerance (1e-3 relative), the suite at 64 ulps
    torch.testing.assert_close(torch.tensor(ours), torch.tensor(theirs), rtol=1e-3, atol=0)
