"""The generic loop's own costs (issue 28, item 3): the one-reduction finiteness test, and the
opt-in compilation of Φ_K as one graph (``restart(compile=...)``)."""

from __future__ import annotations

import pytest
import torch
from retune_suite.operators import restart
from retune_suite.operators.errors import InvalidInputError
from retune_suite.operators.theta import all_finite, check_finite


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_all_finite_is_the_elementwise_test(dtype):
    big = torch.finfo(dtype).max
    x = torch.ones(1000, dtype=dtype)
    assert all_finite(x) and all_finite(x[:0])
    for bad in (float("nan"), float("inf"), -float("inf")):
        y = x.clone()
        y[417] = bad
        assert not all_finite(y)
    # finite entries whose sum overflows: the elementwise test decides, True
    huge = torch.full((8,), big, dtype=dtype)
    assert not torch.isfinite(huge.sum()) and all_finite(huge)
    # inf and −inf: the sum is NaN, still not finite
    y = x.clone()
    y[0], y[1] = float("inf"), -float("inf")
    assert not all_finite(y)


def test_check_finite_still_names_the_tensor():
    x = torch.zeros(3, 4)
    x[1, 2] = float("nan")
    with pytest.raises(InvalidInputError, match="x0 contains NaN"):
        check_finite(x, "x0")
    with pytest.raises(InvalidInputError, match="x0 contains NaN"):
        restart(lambda x, th: th * x, torch.tensor(0.5), x, 2, 2)


def test_all_finite_records_no_graph():
    x = torch.ones(5, requires_grad=True)
    assert all_finite(x * 2)


def test_compiled_block_equals_the_eager_loop():
    """restart(compile=...) traces Φ_K as one graph: the same iterates (aot_eager runs the
    traced ATen ops as they are, so bit for bit) and the same statistics."""
    c = torch.linspace(0, 1, 64).reshape(4, 16)

    def step(x, theta):
        return torch.addcmul(c, x, theta).sin()

    theta = torch.tensor(0.5)
    x0 = torch.rand(4, 16, generator=torch.Generator().manual_seed(0))
    eager = restart(step, theta, x0, 3, 4)
    traced = restart(step, theta, x0, 3, 4, compile="aot_eager")
    assert torch.equal(traced.x, eager.x) and torch.equal(traced.x_prev, eager.x_prev)
    torch.testing.assert_close(traced.stats.residuals, eager.stats.residuals, rtol=0, atol=0)
    with pytest.raises(InvalidInputError, match=r"not a torch\.compile backend"):
        restart(step, theta, x0, 3, 4, compile="no-such-backend")
