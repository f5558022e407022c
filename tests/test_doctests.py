"""The docstrings' examples of every module of the installed namespace, run as doctests.

Collected by import name (``retune_suite.…``), not by file: the repository's folders are
mapped into the namespace (pyproject's package-dir), and collecting ``operators/x.py`` as a
file would import it a second time under the top-level name ``operators``.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil
import sys
from pathlib import Path

import pytest
import torch

import retune_suite

# The root folder's own modules, then each mapped sub-package (in a checkout, __path__ also
# holds the repository root, whose other folders are not part of the package).
ROOT_FOLDER = [str(Path(retune_suite.__file__).parent)]
MODULES = ["retune_suite"]
MODULES += [m.name for m in pkgutil.walk_packages(ROOT_FOLDER, "retune_suite.")]
for _sub in ("operators", "bounds", "experiments"):
    _pkg = importlib.import_module(f"retune_suite.{_sub}")
    MODULES += [m.name for m in pkgutil.walk_packages(_pkg.__path__, f"retune_suite.{_sub}.")]
    MODULES.append(f"retune_suite.{_sub}")
MODULES = sorted(set(MODULES))


REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name, monkeypatch):
    module = importlib.import_module(name)
    # As a user runs them: without the repository on sys.path, so that an example importing an
    # old top-level name (``import bounds``) fails here instead of finding the folder.
    kept = [p for p in sys.path if Path(p or ".").resolve() != REPO]
    monkeypatch.setattr(sys, "path", kept)
    previous = torch.get_default_dtype()
    try:
        torch.set_default_dtype(torch.float32)  # the doctests state their own dtypes
        result = doctest.testmod(
            module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False
        )
    finally:
        torch.set_default_dtype(previous)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"
