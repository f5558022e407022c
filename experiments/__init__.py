"""Command line (``retune-suite``), built-in problems, and result writing."""
