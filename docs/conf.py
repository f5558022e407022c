"""Sphinx configuration of the retune-suite site: guides (Markdown, MyST) and the API reference
(autodoc, NumPy-style docstrings, ``.. math::`` rendered by MathJax).

Build it from the repository root, with warnings as errors (as ``.ci/run`` does)::

    python -m sphinx -W --keep-going -b html docs docs/_build/html

The package is imported from its installation (``pip install -e ".[docs,testing]"``: hypothesis
for ``retune_suite.testing.strategies``), never from ``sys.path`` tricks: the pages document
exactly what users import.
"""

from __future__ import annotations

import io
import os
import re
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

from docutils import nodes
from sphinx.util.docutils import SphinxDirective

import retune_suite

project = "retune-suite"
author = "retune-suite contributors"
copyright = "2025, retune-suite contributors"
release = retune_suite.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "myst_parser",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = [
    "_build",
    "results/**",  # result files (CSV, figures, RUN.md notes) that pages link to or show
    "Thumbs.db",
    ".DS_Store",
]

# MyST: the pages write mathematics in Unicode, not $…$, so dollarmath stays off (it would
# read shell's "$(…)" in prose as mathematics). Headings get anchors for "page.md#heading" links.
myst_heading_anchors = 3

# autodoc: each object is documented once, in the module that defines it; the packages' pages
# show their docstrings and say what they re-export (documenting a re-export a second time would
# make short cross-references ambiguous).
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_format = "short"
autodoc_class_signature = "separated"
autodoc_preserve_defaults = True
napoleon_numpy_docstring = True
napoleon_google_docstring = False
napoleon_use_rtype = False

# No intersphinx: the build needs no network. Cross-references to torch, numpy, … stay plain
# text; nitpicky stays off, so they do not warn.

html_theme = "alabaster"
html_title = f"retune-suite {release}"
html_theme_options = {"description": "hypergradients at equilibrium, and the paper's bounds"}
html_static_path: list[str] = []


# --- |x| in docstrings ---------------------------------------------------------------------
# The docstrings write mathematics in Unicode (ruff's RUF001-003 are off for it), where |x| is
# an absolute value: max(|1 − τμ|, |1 − τL|), |θᵢ|, |ĥ_k|². reStructuredText would read
# "|1 − τμ|" as a substitution reference and stop the build. No docstring uses substitutions,
# so a bar in a docstring's prose is escaped ("\|", shown as "|") before it is parsed. Left as
# they are: inline literals and roles (``…``, :math:`…`), literal blocks ("::"), doctest
# blocks, the bodies of the literal directives (math, code), grid-table rows and line blocks.
# In a simple table's row each escape takes one space from the next gap between columns, so
# the columns stay where they were (a row where that is impossible still fails the build).
# Nothing else is changed: every other markup error still stops the build.
_LITERAL_DIRECTIVES = re.compile(
    r"\.\.\s+(math|code|code-block|sourcecode|literalinclude|highlight|parsed-literal|"
    r"doctest|testcode|testoutput|raw|graphviz)::"
)
_INLINE_LITERAL = re.compile(r"``.+?``|:[\w.:+-]+:`[^`]*`|`[^`]*`_{0,2}")
_UNESCAPED_BAR = re.compile(r"(?<!\\)\|")
_SIMPLE_TABLE_BORDER = re.compile(r"^\s*=+( +=+)+\s*$")


def _escape_bars_in_prose(text: str, mark: str = "\\") -> str:
    out, last = [], 0
    for m in _INLINE_LITERAL.finditer(text):
        out += [_UNESCAPED_BAR.sub(mark + "|", text[last : m.start()]), m.group(0)]
        last = m.end()
    out.append(_UNESCAPED_BAR.sub(mark + "|", text[last:]))
    return "".join(out)


def _escape_table_row(row: str) -> str:
    """Escape a simple table's row; each escape takes a space from the next gap of 3+."""
    marked, out, debt, i = _escape_bars_in_prose(row, mark="\x00"), [], 0, 0
    while i < len(marked):
        if marked[i] == "\x00":
            debt += 1
            out.append("\\")
            i += 1
        elif marked[i] == " " and debt:
            run = len(marked[i:]) - len(marked[i:].lstrip(" "))
            take = min(debt, run - 2) if run >= 3 else 0
            debt -= take
            out.append(" " * (run - take))
            i += run
        else:
            out.append(marked[i])
            i += 1
    return "".join(out)


def _escape_docstring_bars(app, what, name, obj, options, lines: list[str]) -> None:
    block_indent = None  # indentation of the line that opened a literal block / directive
    in_doctest = in_table = False
    for i, line in enumerate(lines):
        stripped = line.lstrip()
        indent = len(line) - len(stripped)
        if not stripped:
            in_doctest = in_table = False
            continue
        if block_indent is not None:
            if indent > block_indent:
                continue
            block_indent = None
        if in_doctest or stripped.startswith(">>>"):
            in_doctest = True
            continue
        if _LITERAL_DIRECTIVES.match(stripped):
            block_indent = indent
            continue
        if _SIMPLE_TABLE_BORDER.match(line):
            in_table = True
            continue
        if stripped.startswith(("| ", "+-", "+=")) or stripped == "|":
            continue  # a line block, or a grid table
        if "|" in line:
            lines[i] = _escape_table_row(line) if in_table else _escape_bars_in_prose(line)
        if stripped.endswith("::") and not stripped.startswith(".."):
            block_indent = indent  # a literal block follows


# --- references to the public names ---------------------------------------------------------
# Each object is documented once, where it is defined (retune_suite.bounds.report.verify), but
# the docstrings name it as users import it (:func:`retune_suite.bounds.verify`,
# :func:`retune_suite.operators.hypergrad.estimate`). A Python reference that finds no target
# is resolved here by importing what it names and linking to where that same object is
# documented; one that names nothing importable stays unresolved, exactly as before.
def _import_dotted(name: str):
    import importlib

    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        try:
            for attr in parts[i:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return None
        return obj
    return None


_DOCUMENTED: dict[int, tuple[object, str]] = {}


def _key(obj) -> int:
    return id(getattr(obj, "__func__", obj))  # a bound classmethod is a new object each time


def _documented_name(env, obj) -> str | None:
    if not _DOCUMENTED:
        for name, entry in env.get_domain("py").objects.items():
            if entry.objtype in ("module", "data", "attribute") or getattr(entry, "aliased", 0):
                continue
            documented = _import_dotted(name)
            if documented is not None:  # the object is kept, so that its id stays its own
                _DOCUMENTED.setdefault(_key(documented), (documented, name))
    return _DOCUMENTED.get(_key(obj), (None, None))[1]


def _resolve_public_name(app, env, node, contnode):
    if node.get("refdomain") != "py" or node.get("reftype") == "mod":
        return None
    target = node["reftarget"].lstrip(".~")
    module, cls = node.get("py:module"), node.get("py:class")
    candidates = [target]
    if module:
        candidates = [f"{module}.{target}", *([f"{module}.{cls}.{target}"] if cls else []), target]
    for candidate in candidates:
        if not candidate.startswith("retune_suite."):
            continue
        obj = _import_dotted(candidate)
        documented = _documented_name(env, obj) if obj is not None else None
        if documented and documented != candidate:
            domain = env.get_domain("py")
            return domain.resolve_xref(
                env, node["refdoc"], app.builder, node["reftype"], documented, node, contnode
            )
    return None


# --- README.md in the guides --------------------------------------------------------------
# The guides include sections of the repository's README.md (the lead's page; it is not
# edited for the site). Its links are written for GitHub, relative to the repository root:
# "docs/x.md" and "docs/results/…png" become "/x.md" and "/results/…png" (Sphinx reads a
# leading "/" as the source folder, docs/), and a link to a repository file outside docs/
# ("examples/train_your_own.py") becomes its text, a code span: the site does not ship it.
_README_LINK = re.compile(r"(!?)\[([^\]]*)\]\(([^)\s]+)\)")


def _readme_link(match: re.Match[str]) -> str:
    bang, text, target = match.groups()
    if re.match(r"[a-z]+:", target) or target.startswith("#"):
        return match.group(0)
    if target.startswith("docs/"):
        return f"{bang}[{text}](/{target.removeprefix('docs/')})"
    if bang:  # an image outside docs/ would be missing from the site: fail loudly
        return match.group(0)
    return text if text.startswith("`") else f"{text} (`{target}`)"


def _rewrite_readme_links(app, relative_path, parent_docname, content) -> None:
    if Path(relative_path).name == "README.md" and Path(relative_path).parent == Path(".."):
        content[0] = _README_LINK.sub(_readme_link, content[0])


# --- the command line -----------------------------------------------------------------------
class CommandHelp(SphinxDirective):
    """``.. command-help:: errors``: ``retune-suite errors --help`` as a literal block, taken
    from the parser itself (``retune_suite.experiments.cli.build_parser``), so the page cannot
    drift from the command. Without an argument, the top-level ``retune-suite --help``."""

    optional_arguments = 1
    has_content = False

    def run(self) -> list[nodes.Node]:
        from retune_suite.experiments.cli import build_parser

        argv = [*self.arguments, "--help"]
        previous = os.environ.get("COLUMNS")
        os.environ["COLUMNS"] = "92"  # argparse wraps at COLUMNS: the same page on any terminal
        out, err = io.StringIO(), io.StringIO()
        try:
            with redirect_stdout(out), redirect_stderr(err):
                build_parser().parse_args(argv)
        except SystemExit:  # --help exits; an unknown command exits with no help printed
            pass
        finally:
            if previous is None:
                del os.environ["COLUMNS"]
            else:
                os.environ["COLUMNS"] = previous
        text = out.getvalue().rstrip()
        if not text:
            raise self.error(f"retune-suite {' '.join(argv)}: {err.getvalue().strip()}")
        block = nodes.literal_block(text, text)
        block["language"] = "text"
        return [block]


def setup(app):
    app.connect("autodoc-process-docstring", _escape_docstring_bars)
    app.connect("include-read", _rewrite_readme_links)
    app.connect("missing-reference", _resolve_public_name)
    app.add_directive("command-help", CommandHelp)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
