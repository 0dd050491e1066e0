"""Every example reaches its printed bar (each exits non-zero when it misses).

The examples whose full run takes minutes (``QUICK``) run in the suite with ``--quick``:
less data and fewer epochs, against a shorter bar each states beside its full one. Their
full runs, the bars the README quotes, are marked ``full``: ``pytest -m full`` runs them,
with the bfloat16-compute runs of two examples.
Every test here is ``slow`` (a child process that trains), out of the fast tier.
"""

from pathlib import Path

import pytest

from tests import forked

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
pytestmark = pytest.mark.slow

# (script, a line its output must contain)
CASES = [
    ("xor.py", "XOR: 4/4 points right"),
    ("majority.py", "majority of 5 bits: 32/32 inputs right (100.00%)"),
    ("iris.py", "test accuracy"),
    ("digits_cnn.py", "digits CNN: test accuracy"),
    # Split the host CPU into devices and use CPU collectives: CPU-only by construction.
    pytest.param("data_parallel.py", "data parallel: test accuracy", marks=pytest.mark.cpu_only),
    pytest.param("multihost.py", "params identical on all: yes; FSDP equal to one device, "
                 "checkpoint restored onto its shardings: yes; each process streaming its "
                 "share equal to one device: yes", marks=pytest.mark.cpu_only),
    ("spirals.py", "spirals: training accuracy"),
    ("digits_insight.py", "digits insight: test accuracy"),
    ("resnet_digits.py", "resnet digits: test accuracy"),
    ("names_mlp.py", "names MLP: validation"),
    ("char_transformer.py", "char transformer: validation"),
    ("char_lstm.py", "char LSTM: validation"),
    ("vit_digits.py", "ViT digits: test accuracy"),
    ("seq2seq_dates.py", "seq2seq dates: exact match"),
    ("streamed_digits.py", "streamed digits: test accuracy"),
    ("torch_interop.py", "torch interop: export same classes: yes"),
]
# Minutes in full: in the suite with --quick, in full under the `full` marker.
QUICK = {"char_transformer.py", "char_lstm.py", "seq2seq_dates.py", "resnet_digits.py",
         "digits_insight.py", "torch_interop.py", "streamed_digits.py",
         "names_mlp.py", "vit_digits.py"}
# Run with jax_debug_nans, which checks every compiled call's outputs: no NaN anywhere.
NAN_CHECKED = {"xor.py", "majority.py", "iris.py", "digits_cnn.py"}
GENERATE = {"char_transformer.py", "char_lstm.py"}  # print 8 names drawn with nn.generate
WRITES_PLOTS = {"spirals.py", "digits_insight.py"}  # given an output path, they save PNGs


def run(script, *args, **env_vars):
    """``python examples/script args`` in a child forked from a server that imported jax,
    minitorch and scikit-learn once (tests/forked.py): exit status, stdout, stderr."""
    return forked.run_python(EXAMPLES / script, *args, **env_vars)


@pytest.mark.parametrize("script, expected", CASES)
def test_example_reaches_its_bar(script, expected, tmp_path):
    """In full, or with --quick for the examples in QUICK; NaN-checked for NAN_CHECKED."""
    check_example(script, expected, tmp_path, quick=script in QUICK)


@pytest.mark.full
@pytest.mark.parametrize("script, expected", [c for c in CASES if c[0] in QUICK])
def test_example_reaches_its_full_bar(script, expected, tmp_path):
    check_example(script, expected, tmp_path, quick=False)


def check_example(script, expected, tmp_path, *, quick):
    out = tmp_path / ("spirals.png" if script == "spirals.py" else "plots")
    args = ([out] if script in WRITES_PLOTS else []) + (["--quick"] if quick else [])
    result = run(script, *args, **({"JAX_DEBUG_NANS": "True"} if script in NAN_CHECKED else {}))
    assert result.returncode == 0, result.stdout + result.stderr
    assert expected in result.stdout, result.stdout
    assert "FloatingPointError" not in result.stderr
    if script in GENERATE:
        samples = result.stdout.split("samples: ")[1].splitlines()[0].split(", ")
        assert len(samples) == 8 and all(name.isalpha() for name in samples), result.stdout
    if script in WRITES_PLOTS:
        pngs = [out] if out.suffix == ".png" else sorted(out.glob("*.png"))
        assert pngs and all(p.read_bytes()[:4] == b"\x89PNG" for p in pngs), result.stdout
        if script == "digits_insight.py":
            assert len(pngs) == 8 and result.stdout.strip().endswith(str(out))


@pytest.mark.full
@pytest.mark.parametrize("script, args, expected", [
    ("digits_cnn.py", ("bfloat16",), "digits CNN (bfloat16 compute): test accuracy"),
    ("char_transformer.py", (0, "bfloat16"), "char transformer (bfloat16 compute): validation"),
])
def test_example_reaches_its_bar_in_mixed_precision(script, args, expected):
    """The same bars with float32 params and bfloat16 compute (nn.MixedPrecision). Under
    ``full``: the test command checks bfloat16 compute layer by layer (test_precision,
    test_every_layer) and these examples in float32."""
    result = run(script, *args)
    assert result.returncode == 0, result.stdout + result.stderr
    assert expected in result.stdout, result.stdout


def test_every_example_is_tested():
    scripts = {p.name for p in EXAMPLES.glob("*.py")}
    assert scripts == {case.values[0] if hasattr(case, "values") else case[0] for case in CASES}
