"""Every ```python block of the README and of the docs pages runs, in order, one namespace per
page (a page's blocks build on each other), and the README's examples print what they say."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted(
    [ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "docs" / "guides").glob("*.md")]
)
NOT_RUN = {
    "docs/sweeps.md": "a Slurm cluster script (dask-jobqueue on a login node)",
}
FENCE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def python_blocks(page: Path) -> list[str]:
    """The ```python blocks of a Markdown page, in order."""
    return FENCE.findall(page.read_text())


def run_page(page: Path) -> dict:
    """Execute the page's blocks in one fresh namespace; the default dtype is restored."""
    namespace: dict = {"__name__": f"docs_example_{page.stem}"}
    previous = torch.get_default_dtype()
    try:
        for i, block in enumerate(python_blocks(page), 1):
            exec(compile(block, f"{page.relative_to(ROOT)}, block {i}", "exec"), namespace)
    finally:
        torch.set_default_dtype(previous)
    return namespace


RUN = [p for p in PAGES if python_blocks(p) and str(p.relative_to(ROOT)) not in NOT_RUN]


def test_pages_not_run_still_exist():
    for name in NOT_RUN:
        assert python_blocks(ROOT / name), f"{name} has no python block: drop it from NOT_RUN"


@pytest.mark.parametrize("page", RUN, ids=lambda p: str(p.relative_to(ROOT)))
def test_page_examples_run(page):
    run_page(page)


def test_readme_examples_show_what_they_say():
    ns = run_page(ROOT / "README.md")
    report, est, theta = ns["report"], ns["est"], ns["theta"]
    # The first example's gradients are not all zero (x̄ is not the fixed point).
    assert all(float(g.abs().max()) > 0.1 for g in report.gradients.values())
    assert report.holds["lemma1"] is True and report.holds["theorem1"] is True
    # The certificate bounds the true error (g = −4 at θ = 1/2, b = 1, x̄ = 3) and is certified.
    true_error = float((est.grad + 4.0).abs())
    assert est.certificate_source["status"] == "certified"
    assert true_error <= est.certificate <= true_error + 1e-5
    # The training loop learns θ with b / (1 − θ) = x̄ = 3.
    assert abs(theta.item() - 2 / 3) < 1e-3
