"""Fused blocks (issue 28): the C++ kernel of the wavelet denoising step against the eager step.

The oracle is the eager step and autograd through it (``fused.set_enabled(False)``, the same
switch as ``$RETUNE_FUSED=0``): iterates equal bit for bit (the kernel rounds each operation as
ATen does: one FMA in u ⊙ scale + shift, the rest one rounding each), gradients to 1e-12
relative in float64 (the closed-form VJP sums in another order than autograd). The loops'
residuals come from the kernel's own sum of squares: equal to rounding, not bit for bit.

The first test of a process builds the kernel (about a minute on a cold cache, 2 cores; once
per machine, then loaded from torch's extension cache in well under a second). Where it cannot
be built, the kernel tests skip and the fallback tests still run.
"""

from __future__ import annotations

import logging

import pytest
import torch
from retune_suite.operators import equilibrium, fixed_point, restart, unroll
from retune_suite.operators.fused_blocks import find_fused
from retune_suite.operators.hypergrad import retune, unrolled
from retune_suite.operators.maps import fused, section4
from retune_suite.operators.maps.fused import cpu, reference
from retune_suite.operators.maps.wavelet_prior import WaveletFB, init_theta

GRAD_RTOL = 1e-12  # the tolerance for gradients against autograd, float64

needs_kernel = pytest.mark.skipif(
    fused.backend("cpu") != "cpp", reason="the C++ kernel cannot be built on this machine"
)


@pytest.fixture(autouse=True)
def _default_switch():
    fused.set_enabled(None)
    yield
    fused.set_enabled(None)


def problem(prior="BC", levels=3, size=32, dtype=torch.float64, batch=1, seed=0):
    """A section-4 denoising problem with θ moved off its symmetric start."""
    gen = torch.Generator().manual_seed(seed)
    clean = torch.rand(batch, 3, size, size, generator=gen, dtype=dtype)
    y = clean + 0.2 * torch.randn(clean.shape, generator=gen, dtype=dtype)
    fb = WaveletFB(y, prior=prior, levels=levels)
    theta = init_theta(prior, levels, 3, log_lambda=-1.5, dtype=dtype)
    theta = tuple(t + 0.3 * torch.randn(t.shape, generator=gen, dtype=dtype) for t in theta)
    loss = section4.image_loss(fb, theta, clean)
    return fb, theta, loss


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def both(fn):
    """fn() with the fused kernels on, then off (the eager oracle)."""
    out = {}
    for on in (True, False):
        fused.set_enabled(on)
        out[on] = fn()
    fused.set_enabled(None)
    return out[True], out[False]


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("prior", "levels"), [("B", 3), ("BC", 3), ("B", 4), ("BC", 4)])
def test_block_equals_eager_steps_bit_for_bit(dtype, prior, levels):
    fb, theta, _ = problem(prior, levels, dtype=dtype, batch=2)
    tau, scale, shift = fb._maps(theta)
    u0 = fb.initial()
    uK, res_sq = fused.denoise_block(u0, scale, shift, tau, prior=prior, levels=levels, K=4)
    ref, ref_sq = reference.denoise_block(u0, scale, shift, tau, prior=prior, levels=levels, K=4)
    assert torch.equal(uK, ref)
    x = u0
    for _ in range(4):
        x = fb.step(x, theta)
    assert torch.equal(uK, x)
    assert res_sq.shape == (2,) and res_sq.dtype == dtype
    # the kernel sums its squares in float64, in its own order: equal to rounding
    torch.testing.assert_close(res_sq, ref_sq, rtol=4 * torch.finfo(dtype).eps, atol=0)


def _random_maps(channels, size, dtype, batch=2, seed=0):
    """u₀, scale and shift with ``channels`` channels (problem() has three), shrinking some
    groups to zero and leaving others live."""
    gen = torch.Generator().manual_seed(seed)
    shape = (batch, channels, size, size)
    u0 = torch.randn(shape, generator=gen, dtype=dtype)
    scale = 0.5 + 0.4 * torch.rand((1, *shape[1:]), generator=gen, dtype=dtype)
    shift = 0.3 * torch.randn(shape, generator=gen, dtype=dtype)
    return u0, scale, shift


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("channels", [1, 2, 5])
@pytest.mark.parametrize("prior", ["B", "BC"])
def test_every_group_size_equals_eager_steps(prior, channels, dtype):
    """The kernel keeps the state in registers for groups of one channel and of three (θ_BC in
    colour), and steps through the tile for other θ_BC groups: every path equals the eager
    steps bit for bit, and its VJP autograd (float64: 1e-12)."""
    u0, scale, shift = _random_maps(channels, 32, dtype)
    kw = dict(prior=prior, levels=3, K=4)
    uK, res_sq = fused.denoise_block(u0, scale, shift, 0.2, **kw)
    ref, ref_sq = reference.denoise_block(u0, scale, shift, 0.2, **kw)
    assert torch.equal(uK, ref)
    torch.testing.assert_close(res_sq, ref_sq, rtol=4 * torch.finfo(dtype).eps, atol=0)
    if dtype == torch.float64:
        g = torch.randn(u0.shape, generator=torch.Generator().manual_seed(1), dtype=dtype)
        got = fused.denoise_block_vjp(u0, scale, shift, 0.2, grad_uK=g, need_u0=True, **kw)
        want = reference.denoise_block_vjp(u0, scale, shift, 0.2, grad_uK=g, need_u0=True, **kw)
        for a, b in zip(got, want, strict=True):
            assert rel(a, b) <= GRAD_RTOL


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("prior", "channels"), [("B", 3), ("BC", 3), ("BC", 2)])
@pytest.mark.parametrize("T", [1, 4])
def test_t_blocks_in_one_pass_equal_t_blocks(T, prior, channels, dtype):
    """denoise_blocks (T blocks in one pass) returns the iterates of T eager blocks bit for
    bit, x_K(T−1) too (x₀ itself when T = 1), and each block's residual to rounding."""
    u0, scale, shift = _random_maps(channels, 64, dtype, batch=3)
    kw = dict(prior=prior, levels=4, K=5, T=T)
    uKT, prev, res_sq = fused.denoise_blocks(u0, scale, shift, 0.2, **kw)
    ref, ref_prev, ref_sq = reference.denoise_blocks(u0, scale, shift, 0.2, **kw)
    assert torch.equal(uKT, ref) and torch.equal(prev, ref_prev)
    if T == 1:
        assert prev.data_ptr() == u0.data_ptr()
    assert res_sq.shape == (T, 3) and res_sq.dtype == dtype
    torch.testing.assert_close(res_sq, ref_sq, rtol=4 * torch.finfo(dtype).eps, atol=0)
    assert (res_sq[1:] < res_sq[:-1]).all()  # a contraction: the residuals decrease
    with pytest.raises(RuntimeError, match="T must be >= 1"):
        fused.denoise_blocks(u0, scale, shift, 0.2, **{**kw, "T": 0})


def test_backends_without_many_blocks_run_t_blocks(monkeypatch):
    """A backend with only ``denoise_block`` (Triton) gives denoise_blocks by T calls of it."""
    calls = []

    class OneBlock:
        def denoise_block(self, u0, *args, **kwargs):
            calls.append(1)
            return reference.denoise_block(u0, *args, **kwargs)

    monkeypatch.setattr(fused, "_require", lambda device: OneBlock())
    u0, scale, shift = _random_maps(3, 32, torch.float64)
    kw = dict(prior="BC", levels=3, K=3, T=3)
    got = fused.denoise_blocks(u0, scale, shift, 0.2, **kw)
    want = reference.denoise_blocks(u0, scale, shift, 0.2, **kw)
    assert len(calls) == 3
    for a, b in zip(got, want, strict=True):
        assert torch.equal(a, b)


@needs_kernel
def test_restart_runs_all_blocks_in_one_call(monkeypatch):
    """restart asks a step's fused ``blocks`` for all T blocks at once; where it declines, the
    loop runs ``block`` T times; both give the eager iterates."""
    from retune_suite.operators.maps.wavelet_prior import DenoisingBlocks

    fb, theta, _ = problem("BC", 3, batch=2)
    calls = {"blocks": 0, "block": 0}
    many, one = DenoisingBlocks.blocks, DenoisingBlocks.block

    def counted(name, fn):
        def call(self, *args):
            calls[name] += 1
            return fn(self, *args)

        return call

    monkeypatch.setattr(DenoisingBlocks, "blocks", counted("blocks", many))
    monkeypatch.setattr(DenoisingBlocks, "block", counted("block", one))
    r = restart(fb.step, theta, fb.initial(), 3, 5)
    assert calls == {"blocks": 1, "block": 0}
    monkeypatch.setattr(DenoisingBlocks, "blocks", lambda self, *args: None)
    r1 = restart(fb.step, theta, fb.initial(), 3, 5)
    assert calls == {"blocks": 1, "block": 5}
    fused.set_enabled(False)
    r0 = restart(fb.step, theta, fb.initial(), 3, 5)
    for a in (r, r1):
        assert torch.equal(a.x, r0.x) and torch.equal(a.x_prev, r0.x_prev)
        torch.testing.assert_close(a.stats.residuals, r0.stats.residuals, rtol=1e-13, atol=0)


@needs_kernel
@pytest.mark.parametrize("need_u0", [False, True])
@pytest.mark.parametrize(("prior", "levels"), [("B", 3), ("BC", 4)])
def test_vjp_equals_autograd(prior, levels, need_u0):
    fb, theta, _ = problem(prior, levels, batch=2)
    tau, scale, shift = fb._maps(theta)
    u0 = fb.initial()
    g = torch.randn(u0.shape, generator=torch.Generator().manual_seed(1))
    kw = dict(prior=prior, levels=levels, K=5, grad_uK=g, need_u0=need_u0)
    got = fused.denoise_block_vjp(u0, scale, shift, tau, **kw)
    want = reference.denoise_block_vjp(u0, scale, shift, tau, **kw)
    assert (got[0] is None) == (not need_u0)
    for a, b in zip(got, want, strict=True):
        if b is not None:
            assert a.shape == b.shape
            assert rel(a, b) <= GRAD_RTOL


@needs_kernel
def test_vjp_passes_gradcheck():
    """The fused block as an autograd function against finite differences."""
    fb, theta, _ = problem("BC", 2, size=8)
    tau, scale, shift = fb._maps(theta)
    u0 = fb.initial().requires_grad_(True)
    scale = scale.detach().requires_grad_(True)
    shift = shift.detach().requires_grad_(True)

    def block(u, s, b):
        return fused.DenoiseBlock.apply(u, s, b, tau.detach(), "BC", 2, 3)

    assert torch.autograd.gradcheck(block, (u0, scale, shift))


@needs_kernel
@pytest.mark.parametrize("prior", ["B", "BC"])
def test_loops_use_fused_blocks_and_agree_with_autograd(prior):
    """restart, fixed_point (Picard and Anderson), retune, unrolled and equilibrium: iterates
    bit for bit, gradients to 1e-12, with the kernel and with the eager step."""
    fb, theta, loss = problem(prior, 4 if prior == "BC" else 3)
    step, x0 = fb.step, fb.initial()
    assert find_fused(step) is not None

    def run():
        r = restart(step, theta, x0, 3, 4)
        fp = fixed_point(step, theta, x0, 3)
        fa = fixed_point(step, theta, x0, 2, method="anderson")
        g_r = retune(step, theta, x0, loss, 3, 4)
        g_u = unrolled(step, theta, x0, loss, 2, 3)
        leaves = tuple(t.detach().clone().requires_grad_(True) for t in theta)
        loss(equilibrium(step, leaves, x0, K=3, T=4, backward="retune")).backward()
        return r, fp, fa, g_r, g_u, tuple(t.grad for t in leaves)

    (r, fp, fa, g_r, g_u, g_e), (r0, fp0, fa0, g_r0, g_u0, g_e0) = both(run)
    assert torch.equal(r.x, r0.x) and torch.equal(r.x_prev, r0.x_prev)
    torch.testing.assert_close(r.stats.residuals, r0.stats.residuals, rtol=1e-13, atol=0)
    assert torch.equal(fp.x, fp0.x) and fp.stats.blocks == fp0.stats.blocks
    torch.testing.assert_close(fa.x, fa0.x, rtol=1e-13, atol=1e-15)
    for got, want in ((g_r, g_r0), (g_u, g_u0), (g_e, g_e0)):
        for a, b in zip(got, want, strict=True):
            assert rel(a, b) <= GRAD_RTOL


@needs_kernel
def test_batched_fixed_point_per_sample_residuals():
    fb, theta, _ = problem("B", 3, batch=3)
    run = lambda: fixed_point(fb.step, theta, fb.initial(), 2, batch_dim=0)  # noqa: E731
    a, b = both(run)
    assert torch.equal(a.x, b.x)
    assert a.stats.sample_blocks.tolist() == b.stats.sample_blocks.tolist()


@needs_kernel
def test_graph_step_double_backward_equals_eager():
    """The step with a graph is the fused block of one step; a double backward (create_graph)
    goes through the eager reference, so second derivatives are exact too."""
    fb, theta, _ = problem("BC", 3)

    def second():
        leaves = tuple(t.detach().clone().requires_grad_(True) for t in theta)
        x = unroll(fb.step, 2)(fb.initial(), leaves)
        (g,) = torch.autograd.grad((x**2).sum(), leaves[0], create_graph=True)
        return torch.autograd.grad(g.sum(), leaves)

    for a, b in zip(*both(second), strict=True):
        assert rel(a, b) <= GRAD_RTOL


def test_forced_fallback_runs_the_eager_step(monkeypatch):
    """$RETUNE_FUSED=0 (or set_enabled(False)): no kernel is asked for, every loop runs."""
    monkeypatch.setenv(fused.ENV, "0")
    assert fused.backend("cpu") == "eager"
    fb, theta, loss = problem("B", 3)
    blocks = find_fused(fb.step)
    assert blocks is not None and blocks.block(fb.initial(), theta, 2) is None
    assert blocks.last_block(fb.initial(), theta, 2) is None
    g = retune(fb.step, theta, fb.initial(), loss, 2, 2)
    assert all(torch.isfinite(t).all() for t in g)
    with pytest.raises(RuntimeError, match="no fused kernel"):
        fused.denoise_block(fb.initial(), *fb._maps(theta)[1:], 0.1, prior="B", levels=3, K=1)


def test_a_failed_build_logs_once_and_falls_back(monkeypatch, caplog):
    """No compiler: one log line, then the eager step (same results)."""
    from torch.utils import cpp_extension

    def no_compiler(*args, **kwargs):
        raise RuntimeError("Error building extension: c++: not found")

    monkeypatch.setattr(cpu, "_MODULE", None)
    monkeypatch.setattr(cpu, "_FAILED", None)
    monkeypatch.setattr(cpp_extension, "load", no_compiler)
    with caplog.at_level(logging.WARNING, logger="retune_suite.operators.maps.fused"):
        assert fused.backend("cpu") == "eager"
        assert fused.backend("cpu") == "eager"
    lines = [r for r in caplog.records if "could not be built" in r.getMessage()]
    assert len(lines) == 1 and "c++: not found" in lines[0].getMessage()
    fb, theta, _ = problem("BC", 3)
    x = restart(fb.step, theta, fb.initial(), 2, 2).x
    fused.set_enabled(False)
    assert torch.equal(x, restart(fb.step, theta, fb.initial(), 2, 2).x)


def test_find_fused_takes_only_the_step_it_fuses():
    fb, _, _ = problem("B", 3)
    assert find_fused(fb.step).step == fb.step
    assert find_fused(fb.estimate) is None  # another method of the same object
    assert find_fused(lambda x, th: x) is None
    general = WaveletFB(fb.y, prior="B", levels=3, model=_Identity())
    assert find_fused(general.step) is None  # D in the loop: no kernel

    def step(x, theta):
        return x

    class Blocks:
        def __init__(self, step):
            self.step = step

    step.fused_blocks = Blocks(step)
    assert find_fused(step) is step.fused_blocks
    other = Blocks(lambda x, th: x)
    step.fused_blocks = other
    assert find_fused(step) is None  # blocks of another step


class _Identity:
    def A(self, x):
        return x

    def A_adjoint(self, y):
        return y

    def norm_sq(self):
        return 1.0


@pytest.mark.parametrize("prior", ["wavelet-B", "wavelet-BC"])
def test_wavelet_domain_loss_equals_image_domain_loss(prior):
    """½‖Dᵀ(u/θ₀) − x̄‖² = ½‖u/θ₀ − Dx̄‖² (D orthonormal): values and gradients, float64."""
    gen = torch.Generator().manual_seed(3)
    clean = torch.rand(2, 3, 32, 32, generator=gen)
    p = section4.build("denoise", prior, clean=clean, seed=0)
    wavelet = section4.image_loss(p.fb, p.theta, clean, domain="wavelet")
    image = section4.image_loss(p.fb, p.theta, clean, domain="image")
    u = p.x0 + 0.1 * torch.randn(p.x0.shape, generator=gen)
    assert wavelet(u).item() == pytest.approx(image(u).item(), rel=1e-13)
    z = u.clone().requires_grad_(True)
    (gw,) = torch.autograd.grad(wavelet(z), z)
    (gi,) = torch.autograd.grad(image(z), z)
    assert rel(gw, gi) <= 1e-13
    assert p.loss(u).item() == wavelet(u).item()  # denoising builds the wavelet-domain loss
    with pytest.raises(Exception, match="domain"):
        section4.image_loss(p.fb, p.theta, clean, domain="fourier")


@needs_kernel
def test_asv_suites_of_the_fused_path_run():
    """The asv suites of benchmarks/fused.py, smallest CPU combinations, once each."""
    from benchmarks import fused as suites

    for suite, combo in ((suites.FusedBlock, ("BC", 64, "cpu", 10)),
                         (suites.FusedRetune, ("fused", 64, "cpu"))):  # fmt: skip
        bench = suite()
        bench.setup(*combo)
        for name in dir(bench):
            if name.startswith(("time_", "peakmem_", "track_")):
                value = getattr(bench, name)(*combo)
                assert value is None or value > 0
        getattr(bench, "teardown", lambda *a: None)(*combo)
    if not torch.cuda.is_available():
        with pytest.raises(NotImplementedError):
            suites.FusedBlock().setup("BC", 64, "cuda", 10)


def test_two_checkouts_of_one_source_share_one_build(tmp_path, monkeypatch):
    """The build compiles a copy of the source in its own folder, named by the source's hash:
    the same source from two checkouts gives one build path (ninja does not rebuild), another
    source another folder."""
    from retune_suite.operators.maps.fused import cpu

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "cache"))
    text = cpu.SOURCE.read_bytes()
    folders = []
    for checkout in ("a", "b"):
        source = tmp_path / checkout / cpu.SOURCE.name
        source.parent.mkdir()
        source.write_bytes(text)
        monkeypatch.setattr(cpu, "SOURCE", source)
        name = cpu._name()
        folder = cpu._build_directory(name)
        assert (folder / cpu.SOURCE.name).read_bytes() == text
        folders.append((name, folder))
    assert folders[0] == folders[1]
    assert folders[0][1].parent == tmp_path / "cache"
    changed = tmp_path / "c" / cpu.SOURCE.name
    changed.parent.mkdir()
    changed.write_bytes(text + b"\n// changed\n")
    monkeypatch.setattr(cpu, "SOURCE", changed)
    assert cpu._name() != folders[0][0]


@needs_kernel
def test_another_ninja_first_on_path_does_not_rebuild(tmp_path):
    """A process whose PATH finds another ninja first (a virtual environment's python run
    without activating it, with the system's ninja on PATH) builds with the wheel's ninja too,
    so it loads the cached kernel instead of rebuilding it (two ninja versions hash their
    build logs differently: each switch rebuilt, 37–40 s)."""
    import os
    import subprocess
    import sys

    folder = cpu._build_directory(cpu._name())
    built = {p.name: p.stat().st_mtime_ns for p in folder.iterdir() if p.suffix in (".o", ".so")}
    assert built  # this process built or loaded it (needs_kernel)
    fake = tmp_path / "bin"
    fake.mkdir()
    marker = tmp_path / "fake-ninja-ran"
    (fake / "ninja").write_text(f"#!/bin/sh\ntouch {marker}\nexit 1\n")
    (fake / "ninja").chmod(0o755)
    env = {**os.environ, "PATH": os.pathsep.join((str(fake), os.environ.get("PATH", "")))}
    code = "from retune_suite.operators.maps.fused import cpu; assert cpu.load() is not None"
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=600)
    assert not marker.exists()
    after = {p.name: p.stat().st_mtime_ns for p in folder.iterdir() if p.suffix in (".o", ".so")}
    assert after == built


def test_the_build_name_follows_the_ninja_that_builds(monkeypatch):
    """The wheel's ninja version is part of the build's name (a new ninja builds afresh
    instead of meeting the old one's log), and it is first on PATH during a build only."""
    import os
    import shutil

    wheel = cpu._ninja_wheel()
    if wheel is None:
        pytest.skip("the ninja wheel is not installed")
    name = cpu._name()
    monkeypatch.setattr(cpu, "_ninja_wheel", lambda: (wheel[0], "0.0.0-other"))
    assert cpu._name() != name
    path = os.environ.get("PATH")
    with cpu._ninja_on_path():
        assert os.environ["PATH"].split(os.pathsep)[0] == wheel[0]
        assert shutil.which("ninja").startswith(wheel[0])
    assert os.environ.get("PATH") == path
