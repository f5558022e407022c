"""operators.equilibrium: ``loss(x).backward()`` puts the matching estimator's gradient in θ.grad.

Float64 throughout. The equalities are to 1e-12 relative (the brief's figure): the backward
passes run the estimators' own products, so in practice they agree to the last bit.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from retune_suite.operators import ConvergenceError, InvalidInputError, fixed_point, hypergrad
from retune_suite.operators.equilibrium import BACKWARDS, equilibrium

from tests.strategies import Instance, affine, instances

RTOL = 1e-12  # the brief's tolerance for "equals the matching estimator"


def reference(backward: str, step, theta, x0, loss, K: int, T: int, P: int):
    """The function of retune_suite.operators.hypergrad that ``backward`` stands for."""
    if backward == "retune":
        return hypergrad.retune(step, theta, x0, loss, K, T)
    if backward == "unrolled":
        return hypergrad.unrolled(step, theta, x0, loss, K, T)
    x_star = fixed_point(step, theta, x0, K).x
    if backward == "jfb":
        return hypergrad.jfb(step, theta, x_star, loss, K)
    if backward == "neumann":
        return hypergrad.deq_neumann(step, theta, x_star, loss, K, P)
    return hypergrad.deq_solve(step, theta, x_star, loss, K)


def as_tuple(g) -> tuple[torch.Tensor, ...]:
    return (g,) if isinstance(g, torch.Tensor) else tuple(g)


def assert_close(got: tuple[torch.Tensor, ...], want: tuple[torch.Tensor, ...]) -> None:
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        assert a.shape == b.shape
        scale = max(1.0, torch.linalg.vector_norm(b).item())
        assert torch.linalg.vector_norm(a - b).item() <= RTOL * scale


def backward_grad(backward: str, step, theta, x0, loss, K: int, T: int, P: int):
    params = tuple(t.detach().clone().requires_grad_(True) for t in as_tuple(theta))
    th = params[0] if isinstance(theta, torch.Tensor) else params
    x = equilibrium(step, th, x0, K=K, T=T, backward=backward, P=P)
    loss(x).backward()
    return tuple(p.grad for p in params), x


@given(instances(), st.sampled_from(BACKWARDS), st.integers(0, 4))
def test_backward_equals_estimator(inst: Instance, backward: str, P: int):
    T = min(inst.T, 8)
    got, x = backward_grad(backward, inst.step, inst.theta, inst.x0, inst.loss, inst.K, T, P)
    want = reference(backward, inst.step, inst.theta, inst.x0, inst.loss, inst.K, T, P)
    assert_close(got, as_tuple(want))
    assert x.shape == inst.x0.shape


def _tuple_problem():
    """φ(x, (a, b)) = a ⊙ x + b·1 with θ = (a, b) a tuple of tensors of different shapes."""
    a = torch.tensor([0.5, -0.3, 0.2], dtype=torch.float64)
    b = torch.tensor(0.7, dtype=torch.float64)
    target = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)

    def step(x, theta):
        return theta[0] * x + theta[1]

    def loss(x):
        return 0.5 * ((x - target) ** 2).sum()

    return step, (a, b), torch.zeros(3, dtype=torch.float64), loss


@pytest.mark.parametrize("backward", BACKWARDS)
def test_tuple_theta(backward: str):
    step, theta, x0, loss = _tuple_problem()
    got, _ = backward_grad(backward, step, theta, x0, loss, 2, 5, 3)
    want = reference(backward, step, theta, x0, loss, 2, 5, 3)
    assert_close(got, as_tuple(want))
    assert [g.shape for g in got] == [t.shape for t in theta]


@pytest.mark.parametrize("backward", BACKWARDS)
def test_adam_steps(backward: str):
    """Five Adam steps on nn.Parameters: at every step θ.grad is the estimator's gradient."""
    step, theta, x0, loss = _tuple_problem()
    params = tuple(torch.nn.Parameter(t.clone()) for t in theta)
    opt = torch.optim.Adam(params, lr=1e-2)
    values = []
    for _ in range(5):
        opt.zero_grad()
        value = loss(equilibrium(step, params, x0, K=2, T=6, backward=backward, P=3))
        value.backward()
        current = tuple(p.detach().clone() for p in params)
        assert_close(
            tuple(p.grad for p in params),
            as_tuple(reference(backward, step, current, x0, loss, 2, 6, 3)),
        )
        opt.step()
        values.append(value.item())
    assert all(torch.isfinite(torch.tensor(values)))
    assert values[-1] < values[0]  # a descent direction for this problem (small lr)


def test_retune_graph_is_one_block():
    """retune keeps the graph of the last block only: x_{K(T−1)} is a constant of the graph."""
    inst = affine([0.5], [0.0], [-1.0], [1.0], 1, 1)
    theta = inst.theta.clone().requires_grad_(True)
    x = equilibrium(inst.step, theta, inst.x0, K=1, T=3, backward="retune")
    (g,) = torch.autograd.grad(x.sum(), theta)
    # x_3 = θ x_2 with x_2 held fixed: ∂x_3/∂θ = x_2 = θ² x_0 = −1/4 (unrolled would give 3θ²x_0)
    assert g.item() == -0.25


def test_deq_backward_raises_convergence_error():
    inst = affine([0.95], [1.0], [0.0], [1.0], 1, 1)
    theta = inst.theta.clone().requires_grad_(True)
    x = equilibrium(inst.step, theta, inst.x0, K=1, backward="deq", tol=1e-14, maxiter=1,
                    solver="fixed_point")  # fmt: skip
    with pytest.raises(ConvergenceError):
        inst.loss(x).backward()


def test_no_graph_to_caller_without_requires_grad():
    inst = affine([0.5, 0.1], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0], 2, 3)
    for backward in BACKWARDS:
        with torch.no_grad():  # evaluation (with gradients on, θ would be named in a warning)
            x = equilibrium(inst.step, inst.theta, inst.x0, K=2, T=3, backward=backward, P=1)
        assert not x.requires_grad


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"backward": "adjoint", "T": 2}, "backward must be one of"),
        ({"backward": "retune"}, "needs T"),
        ({"backward": "unrolled"}, "needs T"),
        ({"backward": "neumann"}, "needs P"),
        ({"backward": "retune", "T": 0}, "T must be"),
    ],
)
def test_bad_input(kwargs: dict, match: str):
    inst = affine([0.5], [0.0], [-1.0], [1.0], 1, 1)
    with pytest.raises(InvalidInputError, match=match):
        equilibrium(inst.step, inst.theta, inst.x0, K=1, **kwargs)
