"""The benchmark scripts run: one round of the comparison, minitorch and raw JAX only (the
peers need the ``bench`` extra), checking that the two steps train the same model."""

import subprocess
import sys
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.peers import PEERS  # noqa: E402
from benchmarks.sequence_peers import (  # noqa: E402
    SEQUENCE_PEERS,
    SEQUENCE_WORKLOADS,
    minitorch_model,
    raw_forward,
)
from benchmarks.workloads import WORKLOADS  # noqa: E402
from tests import forked  # noqa: E402

pytestmark = pytest.mark.slow  # the benchmark scripts, run small


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


def _as_raw(name, p):
    """minitorch's params of a sequence workload in benchmarks/sequence_peers.py's raw layout."""
    if name == "lstm":
        return {"embed": p[0]["W"], "w_ih": p[1]["W_ih"], "w_hh": p[1]["W_hh"],
                "b": p[1]["b_ih"] + p[1]["b_hh"], "head": p[2]["W"], "head_b": p[2]["b"]}
    if name == "convseq":
        def kernel(conv):  # (O, I, K) -> (K, I, O)
            return conv["W"].transpose(2, 1, 0)

        return {"embed": p["embed"]["W"], "c1": kernel(p["convs"][0]), "c1_b": p["convs"][0]["b"],
                "c2": kernel(p["convs"][2]), "c2_b": p["convs"][2]["b"],
                "head": p["head"]["W"], "head_b": p["head"]["b"]}
    blocks = [{"ln1": b["norm1"], "ln2": b["norm2"],
               "qkv": jnp.concatenate([b["attn"][k]["W"] for k in "qkv"], axis=1),
               "qkv_b": jnp.concatenate([b["attn"][k]["b"] for k in "qkv"]),
               "o": b["attn"]["o"]["W"], "o_b": b["attn"]["o"]["b"],
               "up": b["mlp"][0]["W"], "up_b": b["mlp"][0]["b"],
               "down": b["mlp"][2]["W"], "down_b": b["mlp"][2]["b"]} for b in p["blocks"]]
    return {"tok": p["tokens"]["W"], "pos": p["positions"]["W"], "blocks": blocks,
            "ln": p["norm"], "head": p["head"]["W"], "head_b": p["head"]["b"]}


@pytest.mark.parametrize("name", ["gpt", "lstm", "convseq"])
def test_sequence_workloads_compute_the_same_model(name):
    """minitorch's model and the raw JAX reference compute the same logits from the same
    params, so benchmarks/compare.py times like for like; both steps train. The models are
    the benchmark's; the batches are smaller (4 sequences of 16 tokens)."""
    import dataclasses

    from minitorch import losses
    w = dataclasses.replace(SEQUENCE_WORKLOADS[name], batch=4, length=16)
    model = minitorch_model(w)
    params = model.init(jax.random.key(0))
    x, y = w.data()
    logits = jax.jit(model.apply)(params, x)
    np.testing.assert_allclose(logits, jax.jit(raw_forward(w))(_as_raw(name, params), x),
                               rtol=1e-4, atol=1e-5)
    for impl in ("minitorch", "raw JAX"):
        run = SEQUENCE_PEERS[impl](w)()
        first, _, last = (float(run()) for _ in range(3))
        assert np.isfinite(first) and last < first
    assert np.isfinite(float(losses.softmax_cross_entropy(logits, y)))


def test_telemetry_floor_objective_reports_every_layer_and_the_same_loss():
    """benchmarks/telemetry_overhead.py's floor: the plain step's loss, plus one mean per
    sub-layer output (what any exact activation statistic must at least read)."""
    from benchmarks.telemetry_overhead import activation_means_objective
    from minitorch import losses, nn, optim, train

    net = nn.Net([nn.Conv2D(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)])
    params = net.init(jax.random.key(0))
    x, y = nn.init.normal(jax.random.key(1), (8, 1, 8, 8)), jnp.arange(8) % 3
    opt = optim.sgd(0.1)
    _, _, metrics = train.make_step(None, activation_means_objective(net), opt, donate=False)(
        params, opt.init(params), (x, y), None)
    assert metrics["act_means"].shape == (4,)
    np.testing.assert_allclose(metrics["loss"], losses.softmax_cross_entropy(
        net.apply(params, x), y), rtol=1e-6)


def test_accelerator_check_runs_tests_and_benchmarks_and_writes_results(tmp_path):
    """benchmarks/accelerator_check.sh, tested here on the CPU (--allow-cpu) with a small
    selection; on a GPU machine it runs the whole suite and the peers on CUDA."""
    import os

    results = tmp_path / "RESULTS.md"
    results.write_text("# results\n")
    env = {**os.environ, "RESULTS": str(results), "PYTHON": sys.executable,
           "CHECK_TESTS": "tests/test_reshape.py", "CHECK_WORKERS": "0",
           "CHECK_WORKLOADS": "tiny", "CHECK_IMPLS": "minitorch|raw JAX", "CHECK_ROUNDS": "1"}
    env.pop("XLA_FLAGS", None)
    run = subprocess.run(["bash", "benchmarks/accelerator_check.sh"], cwd=ROOT, env=env,
                         capture_output=True, text=True)
    assert run.returncode == 2 and "no accelerator here" in run.stdout  # not on a CPU
    run = subprocess.run(["bash", "benchmarks/accelerator_check.sh", "--allow-cpu"], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    text = results.read_text()
    tests = text.split("<!-- accelerator-tests:begin -->")[1].split("<!-- accelerator-tests")[0]
    assert "Test suite on cpu" in tests and "exit status 0" in tests and " passed" in tests
    table = text.split("<!-- accelerator:begin -->")[1]
    assert "| minitorch |" in table and "| raw JAX | 1.00" in table
    assert (tmp_path / "accelerator.png").read_bytes()[:4] == b"\x89PNG"


def test_conv_formulations_compute_the_same_values_and_gradients():
    """benchmarks/conv_formulations.py times formulations of one convolution and of one
    pooling: each gives the reference's values and gradients (small shapes here)."""
    from benchmarks import conv_formulations as cf

    def value_and_grads(f, *args):  # f's output and the gradient of sum(sin(f)), jit'd
        grads = jax.grad(lambda *a: jnp.sum(jnp.sin(f(*a))), tuple(range(len(args))))
        return jax.jit(lambda *a: (f(*a), grads(*a)))(*args)

    keys = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(keys[0], (2, 1, 7, 6))  # 9 patch features, padded to 16
    w = jax.random.normal(keys[1], (4, 1, 3, 3))
    want = value_and_grads(cf.xla_conv, x, w)
    for conv in (cf.im2col, cf.im2col_lanes):  # float32 sums in another order
        chex.assert_trees_all_close(value_and_grads(conv, x, w), want, rtol=1e-4, atol=1e-4)
    x = jax.random.normal(keys[2], (2, 3, 6, 4))
    want = value_and_grads(cf.pool_reduce_window, x)
    for pool in (cf.pool_channels_last, cf.pool_channels_last_maximum,
                 cf.pool_channels_last_maximum_even, cf.pool_nchw):
        chex.assert_trees_all_close(value_and_grads(pool, x), want, rtol=1e-6)
    # A window of three equal maxima: the even rule splits its gradient as the tiles' max.
    ties = jnp.array([1.0, 1.0, 1.0, 0.0]).reshape(1, 1, 2, 2)
    chex.assert_trees_all_close(value_and_grads(cf.pool_channels_last_maximum_even, ties),
                                value_and_grads(cf.pool_channels_last, ties))


def test_sequence_formulations_compute_the_same_values():
    """benchmarks/sequence_formulations.py times formulations of one computation: each
    gives the same values (and the embedding lookups the same NaN rows), so the timings
    compare like for like."""
    from benchmarks import sequence_formulations as sf
    from benchmarks import sequence_peers as sp
    from minitorch import nn
    keys = jax.random.split(jax.random.key(0), 4)
    x = nn.init.normal(keys[0], (sf.N, 8, sf.IN))
    p = {"w_ih": 0.05 * jax.random.normal(keys[1], (sf.IN, 4 * sf.H)),
         "w_hh": 0.05 * jax.random.normal(keys[2], (sf.H, 4 * sf.H)),
         "b": 0.1 * jax.random.normal(keys[3], (4 * sf.H,))}
    reference = sf.hoisted(p, x)
    for fn in (sf.two_products, sf.one_product, sf.gate_major, sf.vmapped,
               sf.batched_weight_grads, sf.gate_major_batched):
        np.testing.assert_allclose(fn(p, x), reference, rtol=1e-4, atol=1e-5)

    def grads(fn):
        return jax.jit(jax.grad(lambda p, x: jnp.sum(jnp.sin(fn(p, x))), argnums=(0, 1)))(p, x)

    for batched in (sf.batched_weight_grads, sf.gate_major_batched):
        for got, want in zip(jax.tree.leaves(grads(batched)), jax.tree.leaves(grads(sf.hoisted))):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    p_gru = {"w_ih": p["w_ih"][:, :3 * sf.H], "w_hh": p["w_hh"][:, :3 * sf.H]}
    np.testing.assert_allclose(sf.gru(sf.gru_gate_major)(p_gru, x),
                               sf.gru(sf.gru_plain)(p_gru, x), rtol=1e-4, atol=1e-5)
    w = sp.SEQUENCE_WORKLOADS["gpt"]
    params = sp.raw_params(w, jax.random.key(1))
    ids, _ = w.data()
    gpt = sp.gpt_forward(w)(params, ids)
    np.testing.assert_allclose(sp.gpt_forward(w, sf.layer_norm_centered, sf.attend_fused)(
        params, ids), gpt, rtol=1e-4, atol=1e-5)
    table = jax.random.normal(keys[0], (5, 3))
    ids = jnp.array([[0, 4, 5, -1, 2]])
    filled = sf.EMBEDDING_LOOKUPS["NaN fill in the gather"](table, ids)
    for lookup in sf.EMBEDDING_LOOKUPS.values():
        np.testing.assert_array_equal(lookup(table, ids), filled)
    assert np.isnan(filled[0, 2:4]).all() and np.isfinite(filled[0, [0, 1, 4]]).all()


HLO = """\
HloModule step, entry_computation_layout={(f32[4,4]{1,0})->f32[4,4]{1,0}}

%inner (p.1: f32[4,4], /*index=1*/p.2: f32[4,4]) -> f32[4,4] {
  ROOT %dot.7 = f32[4,4]{1,0} dot(%p.1, %p.2), lhs_contracting_dims={1}
}

%outer (p.3: f32[4,4]) -> f32[4,4] {
  ROOT %nested = f32[4,4]{1,0} fusion(%p.3, %p.3), kind=kCustom, calls=%inner
}

%elementwise (p.4: f32[4,4]) -> f32[4,4] {
  ROOT %tanh.1 = f32[4,4]{1,0} tanh(%p.4), metadata={op_name="jit(step)/jvp(dot(x))"}
}

%body (p.5: (s32[], f32[4,4])) -> (s32[], f32[4,4]) {
  %conv = f32[4,4]{1,0} convolution(%p.5, %p.5), window={size=1}
  ROOT %t = (s32[], f32[4,4]{1,0}) tuple(%p.5, %conv)
}

ENTRY %main (x: f32[4,4]) -> f32[4,4] {
  %dot.1 = f32[4,4]{1,0} dot(%x, %x), lhs_contracting_dims={1}
  %ynn_fusion.2 = f32[4,4]{1,0} fusion(%dot.1), kind=kCustom, calls=%outer
  %wrapped_tanh = f32[4,4]{1,0} fusion(%ynn_fusion.2), kind=kLoop, calls=%elementwise, \
metadata={op_name="dot(x)"}
  %while.3 = (s32[], f32[4,4]{1,0}) while(%wrapped_tanh), condition=%cond, body=%body
  ROOT %dot_general_add = f32[4,4]{1,0} add(%wrapped_tanh, %dot.1)
}
"""


def test_sequence_profile_groups_products_by_the_compiled_hlo():
    """A dot, a convolution and fusions computing one (however deeply) are products; an
    elementwise op is not, though its op name mentions a dot; nor is the loop around one."""
    from benchmarks.sequence_profile import product_ops

    assert product_ops(HLO) == {"dot.7", "nested", "conv", "dot.1", "ynn_fusion.2"}


def test_sequence_profile_names_an_op_by_its_jax_source():
    """``--top`` lists each op with its HLO ``op_name`` (less the ``jit(step)/`` prefix), an
    op without one said so, and a name that is a prefix of another's not confused."""
    from benchmarks.sequence_profile import _source_of

    assert _source_of(HLO, "tanh.1") == "jvp(dot(x))"
    assert _source_of(HLO, "wrapped_tanh") == "dot(x)"
    assert _source_of(HLO, "dot.1") == "(no op name)"
    assert _source_of(HLO, "dot") == "(no op name)"


def test_sequence_profile_takes_each_op_s_own_time():
    """An op's own time is its duration less that of the ops nested directly in it."""
    from collections import namedtuple

    from benchmarks.sequence_profile import own_times

    event = namedtuple("event", "name start_ns duration_ns")
    events = [event("loop", 0, 100), event("dot", 10, 20), event("fusion", 40, 20),
              event("dot", 45, 5), event("dot", 120, 10)]
    assert own_times(events) == {"loop": 60, "dot": 35, "fusion": 15}


@pytest.mark.parametrize("name, torch_group", [("lstm", "fused LSTM"),
                                               ("cnn", "convolutions")])
def test_sequence_profile_groups_both_libraries_steps(name, torch_group):
    """One profiled step each: XLA's products and other ops and PyTorch's fused LSTM or
    convolutions are found with time in them, for every JAX step the script profiles.
    (Their shares are the script's measurement, in RESULTS.md: one step on a loaded test
    machine is no measure of them.)"""
    pytest.importorskip("torch")
    from benchmarks.sequence_profile import jax_groups, jax_steps, torch_groups

    programs = jax_steps(name)
    assert set(programs) == ({"raw JAX"} if name == "lstm" else {"minitorch", "raw JAX"})
    for step, args in programs.values():
        xla = jax_groups(step, args, steps=1)
        assert xla.get("products", 0) > 0 and xla.get("other ops", 0) > 0, xla
    torch = torch_groups(name, steps=1)
    assert torch.get(torch_group, 0) > 0, torch


def test_decode_benchmark_candidates_decode_the_same_ids():
    """benchmarks/decode.py's raw JAX cache loop and PyTorch cache loop decode the ids that
    nn.generate and the recompute loop do (the script refuses to time them otherwise), and
    the table has every candidate."""
    run = forked.run_python(ROOT / "benchmarks/decode.py", "--new", "6", "--prompt", "3",
                            "--rounds", "1", "--batches", "3")
    assert run.returncode == 0, run.stderr[-3000:]
    for name in ("minitorch generate", "minitorch recompute", "raw JAX cache"):
        assert f"| 3 | {name} |" in run.stdout, run.stdout


def test_decode_benchmark_raw_loop_equals_generate_with_other_weights():
    from benchmarks.decode import model_and_params, raw_cache_loop
    from minitorch import nn

    model, params = model_and_params(12, seed=3)
    prompt = jnp.asarray(np.random.default_rng(0).integers(1, 28, (2, 4)), jnp.int32)
    np.testing.assert_array_equal(raw_cache_loop(params, prompt, 8)(),
                                  nn.generate(model, params, prompt, 8))


def test_compile_time_first_step_models_and_measurement():
    """compile_time.py's U-Net maps images to per-pixel logits, and a first-step measurement
    reports its seconds split into trace, lower and compile, with the programs counted."""
    from benchmarks import compile_time as ct

    net = ct.unet()
    params = jax.eval_shape(net.init, jax.random.key(0))
    assert sum(leaf.size for leaf in jax.tree.leaves(params)) == 182_282
    images = jax.ShapeDtypeStruct((2, 1, 32, 32), jnp.float32)
    assert jax.eval_shape(net.apply, params, images).shape == (2, 32, 32, 2)
    measured = ct.time_first_step("digits", "make_step")
    assert measured["programs"] >= 1
    assert 0 < measured["trace"] + measured["lower"] + measured["compile"] <= measured["total"]


def test_compile_time_depth_profile_reports_op_time_by_kind(capsys):
    """compile_time.py's depth profile prints, for each stack, op time per step by op kind
    (an op's name less its numbering), with the total first."""
    from benchmarks import compile_time as ct

    assert [ct.op_kind(n) for n in ("copy.113", "ynn_fusion", "wrapped_broadcast.12")] == [
        "copy", "ynn_fusion", "wrapped_broadcast"]
    stacks = ("unrolled", "repeat+remat")  # a straight-line program and a loop
    ct.report_depth_profile([2], steps=1, stacks=stacks)
    lines = capsys.readouterr().out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("2 blocks"))
    assert lines[header + 1].split() == ["op", "kind", *stacks]
    total = [float(v) for v in lines[header + 2].split()[2:]]
    assert lines[header + 2].split()[:2] == ["(all", "ops)"] and min(total) > 0
    kinds = [line.split()[-len(stacks):] for line in lines[header + 3:]]  # names may
    assert kinds and all(0 <= float(v) <= t for row in kinds  # hold spaces ("end: copy")
                         for v, t in zip(row, total)), lines
