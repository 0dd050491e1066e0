"""The benchmark scripts run: one round of the comparison, minitorch and raw JAX only (the
peers need the ``bench`` extra), checking that the two steps train the same model."""

import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.peers import PEERS  # noqa: E402
from benchmarks.workloads import WORKLOADS  # noqa: E402


def test_compare_runs_and_reports_targets():
    run = subprocess.run(
        [sys.executable, "benchmarks/compare.py", "--rounds", "1", "--workloads", "tiny",
         "--impls", "minitorch", "raw JAX", "--compile-repeats", "1", "--import-rounds", "1",
         "--no-write"], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    out = run.stdout
    assert "| minitorch | 1.00 (+-0.00)" not in out  # a ratio of the two, not a copy
    assert "- **tiny**: minitorch / raw JAX" in out and "- import: minitorch" in out


def test_minitorch_and_raw_steps_compute_the_same_losses():
    """Same init, same batch: the library's step and the raw step train the same MLP and CNN
    (the comparison times like for like)."""
    for name in ("tiny", "cnn"):
        w = WORKLOADS[name]
        runs = {impl: PEERS[impl](w)() for impl in ("minitorch", "raw JAX")}
        losses = {impl: [float(run()) for _ in range(3)] for impl, run in runs.items()}
        np.testing.assert_allclose(losses["minitorch"], losses["raw JAX"], rtol=2e-5)
        assert np.all(np.isfinite(losses["minitorch"]))
        assert losses["minitorch"][0] != losses["minitorch"][2]  # the params did change


def test_dropout_benchmark_times_like_for_like():
    """benchmarks/dropout_mask.py's stand-in for the old Dropout (jax.random.bernoulli) and
    nn.Dropout train the digits CNN identically: the benchmark times the mask, nothing else."""
    import jax

    from benchmarks.dropout_mask import JaxDropout, step_runner
    from minitorch import nn

    runs = {name: step_runner(layer) for name, layer in (("jax", JaxDropout),
                                                         ("minitorch", nn.Dropout))}
    (p_jax, m_jax), (p_ours, m_ours) = runs["jax"](), runs["minitorch"]()
    np.testing.assert_array_equal(m_jax["loss"], m_ours["loss"])
    for a, b in zip(jax.tree.leaves(p_jax), jax.tree.leaves(p_ours)):
        np.testing.assert_array_equal(a, b)
