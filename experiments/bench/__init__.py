r"""``retune-suite bench``: hypergradient cost and accuracy, ours and (``--peers``) the peers'.

One problem for every method: colour denoising (A = Id, noise std (0.1, 0.25, 0.5) per
channel) of ``batch`` crops of the embedded photographs, a db4 wavelet prior over 4 levels,
and one hypergradient of the image loss ½‖x − x̄‖² per call, in float32, every method running
``steps`` forward steps from its map's start: x₀ = y for the ptwt map (the iterate is the
image), u₀ = Dy for ours (the paper's x₀, after eq. (52), and the error study's).

Two maps are differentiated, because the libraries do not ship the same wavelet prior:

``ours``
    :class:`retune_suite.operators.maps.wavelet_prior.WaveletFB`, eq. (51): D orthonormal
    (periodized), group
    ℓ₁,₂ over (band, channel) (θ_BC), τ = 1.95·min θ²; for A = Id the step is elementwise in
    the wavelet domain (no transform inside the loop). The iterate is u (image Dᵀθ⁻¹u), the
    hyperparameter θ_BC = (log λ (4,), log Λ (3, 3)) with λ_j = exp(log_lambda), Λ = 1, the
    start u₀ = Dy and the loss L(u) = ½‖Dᵀθ₀⁻¹u − x̄‖² with θ₀ frozen: the problem of
    ``retune-suite errors``, from :func:`retune_suite.operators.maps.section4.build` (the read-out's
    direct
    θ-term, the same for every estimator at a given point, is left out, so every method
    differentiates through the fixed point only, as the peers do). It contracts at
    ω = max(1 − τ, |1 − τ/λ²|) = 0.95 for λ = e^{-1.5}.
``ptwt``
    deepinv 0.5's PGD step with its :class:`deepinv.optim.prior.WaveletPrior` (ptwt, zero
    padding), written out by :class:`.ptwt_map.PtwtFB`: x ← Ψ⁺ soft_{γλ}(Ψ(x − γ(x − y))), Ψ
    a *redundant* frame (zero padding adds coefficients: Ψ⁺Ψ = Id but ΨΨ⁺ ≠ Id, not
    orthonormal), plain ℓ₁ on the details, iterate x = the image, x₀ = y, one scalar λ (the
    same value) and γ = 1 − ω, so that it contracts at our map's rate and equal iteration
    counts mean equal accuracy of the forward pass. It is a *different minimisation problem*
    (another transform, another norm, another fixed point: ``fixed_point_gap_ptwt_vs_ours`` in
    the checks), so its gradients are compared with the DEQ reference of the ptwt map, not ours.

Methods (``vjps``: the vector-Jacobian products through the step, counted by a tensor hook on
its output; for the DEQ rows that is the backward iterations plus one for ∂θφ):

* ours: ReTune K×T (eq. 25), JFB after ``steps`` steps, AD through ``steps`` unrolled steps,
  and the DEQ gradient after ``steps`` steps by GMRES on the adjoint equation
  (:func:`retune_suite.operators.hypergrad.deq_solve`, restart cycles of ``gmres_restart`` products:
  in
  float32 a longer Krylov basis loses orthogonality and stalls near 2e-5 here) twice: given
  ``backward_iters`` VJPs (``×50``: :func:`.ours.krylov_products` Krylov products and the
  residuals computed at each restart and at the end — the peers' IFT does ``backward_iters``
  VJPs too)
  and run to relative residual ``solve_tol`` (``→1e-06``);
* ours, for the working set against T: ReTune K×T for T ∈ :data:`.ours.MEMORY_T` (2 and 40;
  K·T forward steps, not ``steps``: Algorithm 1 keeps the graph of one block whatever T);
* deepinv (``--peers``): ``optim_builder("PGD", prior=WaveletPrior(...), ...,
  DEQ=DEQConfig(...))``, λ trainable, with the IFT backward (fixed-point iteration, Anderson
  off, ``backward_iters`` iterations: ``thres_conv = 0`` so it cannot stop early), the same
  with Anderson acceleration in the backward (``anderson_acceleration_backward=True``,
  deepinv's default history 5, β = 1, ε = 1e-4), with ``jacobian_free=True``, and the IFT run
  to ``thres_conv = solve_tol``;
* torchdeq (``--peers``), on the ptwt map (as its users write it) and on our map (same map,
  same counts): ``get_deq(f_solver="fixed_point_iter", f_max_iter=steps,
  b_solver="fixed_point_iter", b_max_iter=backward_iters, f_tol=0, b_tol=0)`` with
  ``ift=True`` and with ``grad=1`` (one-step gradient); the IFT run to ``b_tol = solve_tol``
  (``b_stop_mode="rel"``); Broyden forward (``steps`` iterations) with a Broyden IFT backward
  (``backward_iters``); the phantom gradient ``grad=K, tau=1`` after ``steps − K`` no-grad
  iterations (ReTune's forward work and backward: on our map it is Algorithm 1, tested); and
  on our map the damped phantom ``tau=0.5``.

The "→ tolerance" rows stop on each library's own criterion: ours ‖b − Mw‖/‖b‖ (GMRES), the
peers' ‖w_{k+1} − w_k‖/‖w_{k+1}‖ — the same residual, relative to ‖w‖ instead of ‖b‖, which is
the looser of the two when the adjoint amplifies (‖w‖ > ‖b‖). They run at most
20·``backward_iters`` iterations (status says when that cap stopped them).

Timing: ``warmup`` untimed calls, then ``repeats`` timed calls (median wall time, median
working set = peak RSS minus RSS before the call,
:func:`retune_suite.experiments.common.measure.measure`,
after :func:`.timing.release_free_memory`); the peers' "→ tolerance" rows are timed once
without warm-up.
``load_1min`` is the machine's load average when the row finished. ``forward_error`` is the
distance of a peer's output to the float64 fixed point of its map (relative), the forward
accuracy behind its gradient. A peer that cannot be
imported gives a row ``not installed: ...``; the run goes on.

Accuracy: ‖g − g_ref‖/‖g_ref‖ against the DEQ gradient of the same map in float64 at the same
size (fixed point by Anderson to ``fixed_point_rtol``, then
:func:`retune_suite.operators.hypergrad.deq_solve` by GMRES to ``reference_tol``).
``forward_agreement``
compares a peer's output with our iteration of the same map (``steps`` + 1 steps). An
``--out`` that already holds results is refused unless ``--overwrite`` is given.

Modules: :mod:`.config` (the configuration), :mod:`.problem` (both maps and their
references), :mod:`.ptwt_map` (the ptwt FB map), :mod:`.counting` (the VJP counter),
:mod:`.ours`, :mod:`.deepinv`, :mod:`.torchdeq` (the rows of each library), :mod:`.timing`
(one row), :mod:`.targets` (the issue's targets), :mod:`.command` (the command).
"""

from .command import run_bench
from .config import BenchConfig, check_output, validate
from .ours import deq_name, krylov_products, retune_name
from .problem import Bench, missing
from .torchdeq import torchdeq_gradient

__all__ = [
    "Bench",
    "BenchConfig",
    "check_output",
    "deq_name",
    "krylov_products",
    "missing",
    "retune_name",
    "run_bench",
    "torchdeq_gradient",
    "validate",
]
