"""The API reference builds from the docstrings (mkdocs + mkdocstrings), and its pages
hold the library's own words."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytest.importorskip("mkdocs")
pytest.importorskip("mkdocstrings")


def test_the_api_reference_builds_from_the_docstrings(tmp_path):
    run = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--quiet", "--site-dir",
                          str(tmp_path / "site")], cwd=ROOT, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    pages = {
        "api/nn/index.html": ["Batch normalisation over the channel axis 1",
                              "MultiHeadAttention"],
        "api/fit/index.html": ["EpochPlan", "Train <code>net</code>"],
        "api/checkpoint/index.html": ["CheckpointManager", "safetensors"],
        "api/metrics/index.html": ["Macro-averaged F1", "stop_gradients"],
    }
    for page, phrases in pages.items():
        html = (tmp_path / "site" / page).read_text()
        for phrase in phrases:
            assert phrase in html, (page, phrase)
