"""What is iterated: the maps φ(x, θ) of the paper and of the suite's checks.

Small exact problems with known constants (:mod:`.problems`, :mod:`.prox`), the orthonormal
DWT (:mod:`.wavelet`), weighted-wavelet forward-backward (:mod:`.wavelet_prior`, eq. (51)),
the forward models of section 4 (:mod:`.physics`), FB-PnP with a DRUNet (:mod:`.pnp`, eq.
(53)), fields of experts (:mod:`.foe`) and the one builder of the section-4 problems
(:mod:`.section4`). Each map is a plain callable ``step(x, theta) -> x``; how it is iterated
and differentiated lives in :mod:`retune_suite.operators`.

The sub-modules are imported on use (``from retune_suite.operators.maps import problems``):
importing this package loads none of them, so the DRUNet's optional dependency stays unloaded.
"""

__all__ = ["foe", "physics", "pnp", "problems", "prox", "section4", "wavelet", "wavelet_prior"]
