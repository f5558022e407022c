r"""``retune-suite reproduce fig1|fig2|fig3`` and ``retune-suite pretrain-denoiser``.

The experiments of section 4 with Algorithm 1 (:mod:`.train`): for each model of the figure
and each (K, T) ∈ {(1, 1), (1, 10), (10, 1), (10, 10)}, Adam on θ for ``epochs`` passes over
``train_pairs`` (clean, observed) crops, batch 4, lr 5·10⁻² (5·10⁻⁵ for the DRUNet weights),
then the test PSNR of x̃ = R(Φ_K^T(x₀, θ)) on held-out images.

======  ===========  ========================================================================
figure  task         models
======  ===========  ========================================================================
fig1    denoise      (a) θ_B, (b) θ_BC: FB on weighted wavelet coefficients (51)
fig2    inpaint      (a) wavelet θ_BC, (b) FB-PnP θ = (σ, τ), DRUNet fixed, (c) FB-PnP θ = Λ
fig3    deblur       the same three; (c) starts from (b)'s final (σ, τ) at the same (K, T)
======  ===========  ========================================================================

A run writes ``<out>/<figure>/<name>/``: ``config.json``, ``metrics.csv`` (one row per gradient
step and configuration), ``checkpoints/<model>_K<K>_T<T>.pt`` (θ, Adam state, step, RNG
states, the rows so far; every ``checkpoint_every`` steps and at the end, atomically),
``summary.csv`` (final train PSNR = mean of the last 25 steps, test PSNR), ``claims.csv`` (the
paper's statements about these figures, checked on the run), ``reconstructions.npz`` (the
shown images and their PSNRs) and the figure ``<figure>.pdf``/``.png`` in the paper's layout.
``--resume`` continues an interrupted run with no step lost or repeated.

The PnP models use the suite's DRUNet from ``<out>/denoiser/<preset>/drunet.pt``
(``retune-suite pretrain-denoiser`` writes it; when it is missing it is trained first, on the
training images only) or ``--denoiser PATH``, a deepinv DRUNet state dict.

Modules: :mod:`.presets` (configurations, presets, validation), :mod:`.train` (Algorithm 1),
:mod:`.claims` (summary and the paper's claims), :mod:`.figures` (the paper-layout figure),
:mod:`.denoiser` (the DRUNet's training), :mod:`.command` (the two commands).
"""

from .claims import WINDOW, check_claims, claims_paragraph, summarise
from .command import reproduce_command, run_pretrain, run_reproduce
from .denoiser import CHECKPOINT_NAME, DenoiserConfig, train_denoiser
from .figures import redraw, reproduce_figure
from .presets import (
    DENOISER_PRESETS,
    PRESETS,
    PRETRAIN_PRESETS,
    RESUMABLE,
    PretrainConfig,
    ReproduceConfig,
    denoiser_folder,
    parse_configs,
    parse_nc,
    run_folder,
    selected_models,
    validate,
    validate_pretrain,
)
from .train import ESTIMATORS, FIGURES, MODELS, batch_indices

__all__ = [
    "CHECKPOINT_NAME",
    "DENOISER_PRESETS",
    "ESTIMATORS",
    "FIGURES",
    "MODELS",
    "PRESETS",
    "PRETRAIN_PRESETS",
    "RESUMABLE",
    "WINDOW",
    "DenoiserConfig",
    "PretrainConfig",
    "ReproduceConfig",
    "batch_indices",
    "check_claims",
    "claims_paragraph",
    "denoiser_folder",
    "parse_configs",
    "parse_nc",
    "redraw",
    "reproduce_command",
    "reproduce_figure",
    "run_folder",
    "run_pretrain",
    "run_reproduce",
    "selected_models",
    "summarise",
    "train_denoiser",
    "validate",
    "validate_pretrain",
]
