"""retune-suite: hypergradients at equilibrium (DEQ, Neumann, JFB, ReTune, unrolled AD), the
paper's error bounds checked on any map, and the paper's experiments.

Built on "Restarted contractive operators to learn at equilibrium" (Davy, Briceño-Arias,
Pustelnik, 2025); equation numbers in docstrings refer to it. Sub-packages:

- :mod:`retune_suite.operators`: how a map is iterated and differentiated (the estimators,
  :func:`~retune_suite.operators.hypergrad.estimate`, the layer
  :func:`~retune_suite.operators.equilibrium.equilibrium`);
- :mod:`retune_suite.operators.maps`: what is iterated (the built-in maps);
- :mod:`retune_suite.bounds`: the paper's statements, their constants, :func:`verify`;
- :mod:`retune_suite.experiments`: the ``retune-suite`` command and its jobs;
- :mod:`retune_suite.testing`: assertions and hypothesis strategies for your own tests.

>>> import retune_suite
>>> sorted(n for n in retune_suite.__all__ if n[0].islower())[:4]
['bounds', 'equilibrium', 'estimate', 'fixed_point']
"""

from importlib.metadata import PackageNotFoundError, version
from pathlib import Path as _Path

# In a source checkout the sub-packages are the repository's top-level folders, mapped into
# the namespace by pyproject's package-dir. An install (editable or regular) does that mapping;
# a checkout imported without one (PYTHONPATH=., or the checkout shadowing a regular install)
# finds them here instead: the same files under the same names. An installed wheel holds them
# inside this folder, and this does nothing.
if not (_Path(__file__).parent / "operators").is_dir():
    _checkout = _Path(__file__).resolve().parent.parent
    if (_checkout / "operators" / "__init__.py").is_file():
        __path__.append(str(_checkout))

from . import bounds, operators
from .bounds import Report, verify
from .operators import (
    ConvergenceError,
    InvalidInputError,
    NotContractiveError,
    RetuneError,
    equilibrium,
    fixed_point,
    hypergrad,
    restart,
    unroll,
)
from .operators.hypergrad import Estimate, estimate

try:
    __version__ = version("retune-suite")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "ConvergenceError",
    "Estimate",
    "InvalidInputError",
    "NotContractiveError",
    "Report",
    "RetuneError",
    "__version__",
    "bounds",
    "equilibrium",
    "estimate",
    "fixed_point",
    "hypergrad",
    "operators",
    "restart",
    "unroll",
    "verify",
]
