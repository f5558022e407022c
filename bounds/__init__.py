"""The paper's statements (Theorem 1, Lemma 1, Theorem 2, Corollary 1), their constants, and
``verify``, which checks them all on one problem."""

from . import constants, statements
from .report import Report, verify

__all__ = ["Report", "constants", "statements", "verify"]
