"""The sequence workloads, written the idiomatic way in each library.

One training step with Adam (learning rate 1e-3), float32, integer tokens ``(32, 64)`` from
a vocabulary of 96, softmax cross-entropy of the next-token logits at every position:

gpt      learned positions, 2 pre-LN blocks (d_model 128, 4 heads, causal attention,
         MLP 128-512-128 with exact GELU), a final LayerNorm, an untied head
lstm     Embedding 96->64, LSTM 256, Linear 256->96 at every step
convseq  Embedding 96->64, Conv1D 64->128 k5, ReLU, Conv1D 128->128 k5, ReLU (both padded
         to keep the length), Linear 128->96 at every position

Each builder has the interface of benchmarks/peers.py: ``impl(workload) -> make``,
``make() -> run``, ``run()`` one step that carries params and optimiser state.
minitorch's step is written by hand from ``apply``, a loss, ``jax.value_and_grad`` and
optax, as a user would; raw JAX is written for speed (LayerNorm's variance by jnp.var,
each attention projection straight into heads, the LSTM's gates from one gate-major
product per step, channels-last convolutions).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks.common import torch_device, torch_finish
from benchmarks.peers import Run, carry_run, equinox_run, nnx_run, optax_step, xent

LEARNING_RATE = 1e-3
WIDTH, HEADS, MLP, DEPTH = 128, 4, 512, 2          # gpt
EMBED, HIDDEN = 64, 256                            # lstm
CHANNELS, KERNEL = 128, 5                          # convseq


@dataclass(frozen=True)
class SequenceWorkload:
    name: str
    batch: int = 32
    length: int = 64
    vocab: int = 96
    calls: int = 20  # step calls per timed round

    def data(self, seed: int = 0):
        rng = np.random.default_rng(seed)
        tokens = rng.integers(0, self.vocab, size=(self.batch, self.length + 1), dtype=np.int32)
        return jnp.asarray(tokens[:, :-1]), jnp.asarray(tokens[:, 1:])


SEQUENCE_WORKLOADS = {"gpt": SequenceWorkload("gpt", calls=10),
                      "lstm": SequenceWorkload("lstm", calls=10),
                      "convseq": SequenceWorkload("convseq", calls=20)}


def functional_step(loss_fn, params, w: SequenceWorkload):
    """The usual optax step around a pure ``loss_fn(params, x, y)`` (jit'd, donating params
    and optimiser state) and its first arguments ``(params, opt_state, x, y)``."""
    x, y = w.data()
    tx = optax.adam(LEARNING_RATE)
    return optax_step(loss_fn, tx), (params, tx.init(params), x, y)


def _functional_run(loss_fn, params, w: SequenceWorkload) -> Run:
    """run() for a pure ``loss_fn(params, x, y)``: :func:`functional_step`, carried."""
    step, args = functional_step(loss_fn, params, w)
    return carry_run(step, *args)


def _gelu(x):
    return jax.nn.gelu(x, approximate=False)


# ---- minitorch ----------------------------------------------------------------------------

def minitorch_model(w: SequenceWorkload):
    from minitorch import nn

    class Block(nn.Composite):
        norm1: nn.Layer
        attn: nn.Layer
        norm2: nn.Layer
        mlp: nn.Layer

        def forward(self, call, x):
            x = x + call("attn", call("norm1", x))
            return x + call("mlp", call("norm2", x))

    class GPT(nn.Composite):
        tokens: nn.Layer
        positions: nn.Layer
        blocks: nn.Layer
        norm: nn.Layer
        head: nn.Layer

        def forward(self, call, ids):
            x = call("tokens", ids) + call("positions", jnp.arange(ids.shape[1]))
            return call("head", call("norm", call("blocks", x)))

    class ConvSeq(nn.Composite):
        embed: nn.Layer
        convs: nn.Layer
        head: nn.Layer

        def forward(self, call, ids):
            h = call("convs", call("embed", ids).swapaxes(1, 2))   # NLC -> NCL
            return call("head", h.swapaxes(1, 2))

    if w.name == "gpt":
        def block():
            return Block(norm1=nn.LayerNorm(WIDTH),
                         attn=nn.MultiHeadAttention(WIDTH, HEADS, causal=True),
                         norm2=nn.LayerNorm(WIDTH),
                         mlp=nn.Net([nn.Linear(WIDTH, MLP), nn.GELU(), nn.Linear(MLP, WIDTH)]))

        return GPT(tokens=nn.Embedding(w.vocab, WIDTH), positions=nn.Embedding(w.length, WIDTH),
                   blocks=nn.Net([block() for _ in range(DEPTH)]), norm=nn.LayerNorm(WIDTH),
                   head=nn.Linear(WIDTH, w.vocab))
    if w.name == "lstm":
        return nn.Net([nn.Embedding(w.vocab, EMBED), nn.LSTM(EMBED, HIDDEN),
                       nn.Linear(HIDDEN, w.vocab)])
    return ConvSeq(embed=nn.Embedding(w.vocab, EMBED),
                   convs=nn.Net([nn.Conv1D(EMBED, CHANNELS, KERNEL, padding=2), nn.ReLU(),
                                 nn.Conv1D(CHANNELS, CHANNELS, KERNEL, padding=2), nn.ReLU()]),
                   head=nn.Linear(CHANNELS, w.vocab))


def minitorch(w: SequenceWorkload) -> Callable[[], Run]:
    from minitorch import losses

    def make():
        model = minitorch_model(w)

        def loss_fn(params, x, y):
            return losses.softmax_cross_entropy(model.apply(params, x), y)

        return _functional_run(loss_fn, model.init(jax.random.key(0)), w)

    return make


# ---- raw JAX ------------------------------------------------------------------------------

def _normal(key, shape, scale=0.02):
    return scale * jax.random.normal(key, shape, jnp.float32)


def _layer_norm(x, p, eps=1e-5):
    # jnp.var rather than mean((x - mean)**2): the backward then fuses without recomputing
    # the residual stream's gradient chain (benchmarks/sequence_formulations.py)
    inverse = jax.lax.rsqrt(jnp.var(x, -1, keepdims=True) + eps) * p["scale"]
    return (x - x.mean(-1, keepdims=True)) * inverse + p["bias"]


def raw_params(w: SequenceWorkload, key):
    keys = iter(jax.random.split(key, 16))
    if w.name == "gpt":
        def ln():
            return {"scale": jnp.ones(WIDTH), "bias": jnp.zeros(WIDTH)}

        blocks = [{"ln1": ln(), "ln2": ln(),
                   "qkv": _normal(next(keys), (WIDTH, 3 * WIDTH)), "qkv_b": jnp.zeros(3 * WIDTH),
                   "o": _normal(next(keys), (WIDTH, WIDTH)), "o_b": jnp.zeros(WIDTH),
                   "up": _normal(next(keys), (WIDTH, MLP)), "up_b": jnp.zeros(MLP),
                   "down": _normal(next(keys), (MLP, WIDTH)), "down_b": jnp.zeros(WIDTH)}
                  for _ in range(DEPTH)]
        return {"tok": _normal(next(keys), (w.vocab, WIDTH)),
                "pos": _normal(next(keys), (w.length, WIDTH)), "blocks": blocks, "ln": ln(),
                "head": _normal(next(keys), (WIDTH, w.vocab)), "head_b": jnp.zeros(w.vocab)}
    if w.name == "lstm":
        return {"embed": _normal(next(keys), (w.vocab, EMBED)),
                "w_ih": _normal(next(keys), (EMBED, 4 * HIDDEN)),
                "w_hh": _normal(next(keys), (HIDDEN, 4 * HIDDEN)), "b": jnp.zeros(4 * HIDDEN),
                "head": _normal(next(keys), (HIDDEN, w.vocab)), "head_b": jnp.zeros(w.vocab)}
    return {"embed": _normal(next(keys), (w.vocab, EMBED)),
            "c1": _normal(next(keys), (KERNEL, EMBED, CHANNELS)), "c1_b": jnp.zeros(CHANNELS),
            "c2": _normal(next(keys), (KERNEL, CHANNELS, CHANNELS)), "c2_b": jnp.zeros(CHANNELS),
            "head": _normal(next(keys), (CHANNELS, w.vocab)), "head_b": jnp.zeros(w.vocab)}


def attend_by_heads(x, b, causal):
    """Raw JAX's causal self-attention: each projection straight into heads (faster than
    one fused QKV product split afterwards: benchmarks/sequence_formulations.py)."""
    d = WIDTH // HEADS
    w, bias = b["qkv"].reshape(WIDTH, 3, HEADS, d), b["qkv_b"].reshape(3, HEADS, d)
    q, k, v = (jnp.einsum("nle,ehd->nlhd", x, w[:, i]) + bias[i] for i in range(3))
    s = jnp.einsum("nlhd,nshd->nhls", q / np.sqrt(d), k)
    p = jax.nn.softmax(jnp.where(causal, s, -1e30), axis=-1)
    out = jnp.einsum("nhls,nshd->nlhd", p, v)
    return jnp.einsum("nlhd,hde->nle", out, b["o"].reshape(HEADS, d, WIDTH)) + b["o_b"]


def gpt_forward(w: SequenceWorkload, layer_norm=_layer_norm, attend=attend_by_heads):
    """Raw JAX's gpt ``forward(params, ids)``; the formulations of its LayerNorm and
    attention can be swapped (benchmarks/sequence_formulations.py times them)."""
    causal = jnp.tril(jnp.ones((w.length, w.length), bool))

    def forward(params, ids):
        x = params["tok"][ids] + params["pos"]
        for b in params["blocks"]:
            x = x + attend(layer_norm(x, b["ln1"]), b, causal)
            h = _gelu(layer_norm(x, b["ln2"]) @ b["up"] + b["up_b"])
            x = x + h @ b["down"] + b["down_b"]
        return layer_norm(x, params["ln"]) @ params["head"] + params["head_b"]

    return forward


def raw_forward(w: SequenceWorkload):
    if w.name == "gpt":
        return gpt_forward(w)
    if w.name == "lstm":
        def forward(params, ids):
            # [x_t, h] @ [W_ih; W_hh] per step, computed gate-major: faster on XLA:CPU
            # than hoisting x @ W_ih out of the loop or than the plain product
            w_t = jnp.concatenate([params["w_ih"], params["w_hh"]]).T

            def cell(carry, x_t):
                h, c = carry
                z = (w_t @ jnp.concatenate([x_t, h], axis=-1).T).T + params["b"]
                i, f, g, o = jnp.split(z, 4, axis=-1)
                c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
                h = jax.nn.sigmoid(o) * jnp.tanh(c)
                return (h, c), h

            zeros = jnp.zeros((ids.shape[0], HIDDEN))
            _, hs = jax.lax.scan(cell, (zeros, zeros), params["embed"][ids].swapaxes(0, 1))
            return hs.swapaxes(0, 1) @ params["head"] + params["head_b"]

        return forward

    return lambda params, ids: convseq_from_rows(params, params["embed"][ids])


def convseq_from_rows(params, rows):
    """Raw JAX's convseq after the embedding lookup: ``rows (N, L, EMBED)`` to logits."""
    def conv(x, kernel, bias):
        return jax.lax.conv_general_dilated(x, kernel, (1,), ((2, 2),),
                                            dimension_numbers=("NWC", "WIO", "NWC")) + bias

    h = jax.nn.relu(conv(rows, params["c1"], params["c1_b"]))
    h = jax.nn.relu(conv(h, params["c2"], params["c2_b"]))
    return h @ params["head"] + params["head_b"]


def raw_jax_step(w: SequenceWorkload):
    """Raw JAX's jit'd training step and its first arguments (see :func:`functional_step`)."""
    forward = raw_forward(w)
    return functional_step(lambda p, x, y: xent(forward(p, x), y),
                           raw_params(w, jax.random.key(0)), w)


def raw_jax(w: SequenceWorkload) -> Callable[[], Run]:
    def make():
        step, args = raw_jax_step(w)
        return carry_run(step, *args)

    return make


# ---- Flax linen ---------------------------------------------------------------------------

def flax_linen(w: SequenceWorkload) -> Callable[[], Run]:
    from flax import linen as nn

    class Block(nn.Module):
        @nn.compact
        def __call__(self, x, mask):
            x = x + nn.MultiHeadDotProductAttention(HEADS, qkv_features=WIDTH)(
                nn.LayerNorm()(x), mask=mask)
            h = nn.Dense(WIDTH)(_gelu(nn.Dense(MLP)(nn.LayerNorm()(x))))
            return x + h

    class Model(nn.Module):
        @nn.compact
        def __call__(self, ids):
            if w.name == "gpt":
                x = nn.Embed(w.vocab, WIDTH)(ids) + nn.Embed(w.length, WIDTH)(
                    jnp.arange(ids.shape[1]))
                mask = nn.make_causal_mask(ids)
                for _ in range(DEPTH):
                    x = Block()(x, mask)
                return nn.Dense(w.vocab)(nn.LayerNorm()(x))
            x = nn.Embed(w.vocab, EMBED)(ids)
            if w.name == "lstm":
                return nn.Dense(w.vocab)(nn.RNN(nn.OptimizedLSTMCell(HIDDEN))(x))
            x = nn.relu(nn.Conv(CHANNELS, (KERNEL,), padding="SAME")(x))
            x = nn.relu(nn.Conv(CHANNELS, (KERNEL,), padding="SAME")(x))
            return nn.Dense(w.vocab)(x)

    def make():
        model = Model()
        x, _ = w.data()
        params = model.init(jax.random.key(0), x)
        return _functional_run(lambda p, x, y: xent(model.apply(p, x), y), params, w)

    return make


# ---- Flax NNX -----------------------------------------------------------------------------

def flax_nnx(w: SequenceWorkload) -> Callable[[], Run]:
    from flax import nnx

    class Block(nnx.Module):
        def __init__(self, rngs):
            self.norm1 = nnx.LayerNorm(WIDTH, rngs=rngs)
            self.norm2 = nnx.LayerNorm(WIDTH, rngs=rngs)
            self.attn = nnx.MultiHeadAttention(HEADS, WIDTH, decode=False, rngs=rngs)
            self.up = nnx.Linear(WIDTH, MLP, rngs=rngs)
            self.down = nnx.Linear(MLP, WIDTH, rngs=rngs)

        def __call__(self, x, mask):
            x = x + self.attn(self.norm1(x), mask=mask)
            return x + self.down(_gelu(self.up(self.norm2(x))))

    class Model(nnx.Module):
        def __init__(self, rngs):
            if w.name == "gpt":
                self.tok = nnx.Embed(w.vocab, WIDTH, rngs=rngs)
                self.pos = nnx.Embed(w.length, WIDTH, rngs=rngs)
                self.blocks = nnx.List([Block(rngs) for _ in range(DEPTH)])
                self.norm = nnx.LayerNorm(WIDTH, rngs=rngs)
                self.head = nnx.Linear(WIDTH, w.vocab, rngs=rngs)
            elif w.name == "lstm":
                self.embed = nnx.Embed(w.vocab, EMBED, rngs=rngs)
                self.rnn = nnx.RNN(nnx.OptimizedLSTMCell(EMBED, HIDDEN, rngs=rngs))
                self.head = nnx.Linear(HIDDEN, w.vocab, rngs=rngs)
            else:
                self.embed = nnx.Embed(w.vocab, EMBED, rngs=rngs)
                self.c1 = nnx.Conv(EMBED, CHANNELS, (KERNEL,), padding="SAME", rngs=rngs)
                self.c2 = nnx.Conv(CHANNELS, CHANNELS, (KERNEL,), padding="SAME", rngs=rngs)
                self.head = nnx.Linear(CHANNELS, w.vocab, rngs=rngs)

        def __call__(self, ids):
            if w.name == "gpt":
                x = self.tok(ids) + self.pos(jnp.arange(ids.shape[1]))
                mask = nnx.make_causal_mask(ids)
                for block in self.blocks:
                    x = block(x, mask)
                return self.head(self.norm(x))
            if w.name == "lstm":
                return self.head(self.rnn(self.embed(ids)))
            x = nnx.relu(self.c2(nnx.relu(self.c1(self.embed(ids)))))
            return self.head(x)

    def make():
        x, y = w.data()
        return nnx_run(Model(nnx.Rngs(0)), optax.adam(LEARNING_RATE), x, y)

    return make


# ---- Haiku --------------------------------------------------------------------------------

def haiku(w: SequenceWorkload) -> Callable[[], Run]:
    import haiku as hk

    def layer_norm():
        return hk.LayerNorm(axis=-1, create_scale=True, create_offset=True)

    def forward(ids):
        if w.name == "gpt":
            x = hk.Embed(w.vocab, WIDTH)(ids) + hk.Embed(w.length, WIDTH)(
                jnp.arange(ids.shape[1]))
            mask = jnp.tril(jnp.ones((1, 1, w.length, w.length), bool))
            for _ in range(DEPTH):
                h = layer_norm()(x)
                x = x + hk.MultiHeadAttention(HEADS, WIDTH // HEADS, model_size=WIDTH,
                                              w_init=hk.initializers.VarianceScaling())(
                    h, h, h, mask=mask)
                x = x + hk.Linear(WIDTH)(_gelu(hk.Linear(MLP)(layer_norm()(x))))
            return hk.Linear(w.vocab)(layer_norm()(x))
        x = hk.Embed(w.vocab, EMBED)(ids)
        if w.name == "lstm":
            core = hk.LSTM(HIDDEN)
            hs, _ = hk.dynamic_unroll(core, x.swapaxes(0, 1), core.initial_state(x.shape[0]))
            return hk.Linear(w.vocab)(hs.swapaxes(0, 1))
        x = jax.nn.relu(hk.Conv1D(CHANNELS, KERNEL, padding="SAME")(x))
        x = jax.nn.relu(hk.Conv1D(CHANNELS, KERNEL, padding="SAME")(x))
        return hk.Linear(w.vocab)(x)

    def make():
        model = hk.without_apply_rng(hk.transform(forward))
        x, _ = w.data()
        params = model.init(jax.random.key(0), x)
        return _functional_run(lambda p, x, y: xent(model.apply(p, x), y), params, w)

    return make


# ---- Equinox ------------------------------------------------------------------------------

def equinox(w: SequenceWorkload) -> Callable[[], Run]:
    import equinox as eqx

    class Block(eqx.Module):
        norm1: eqx.nn.LayerNorm
        attn: eqx.nn.MultiheadAttention
        norm2: eqx.nn.LayerNorm
        up: eqx.nn.Linear
        down: eqx.nn.Linear

        def __init__(self, key):
            k1, k2, k3 = jax.random.split(key, 3)
            self.norm1, self.norm2 = eqx.nn.LayerNorm(WIDTH), eqx.nn.LayerNorm(WIDTH)
            self.attn = eqx.nn.MultiheadAttention(
                HEADS, WIDTH, use_query_bias=True, use_key_bias=True, use_value_bias=True,
                use_output_bias=True, key=k1)
            self.up = eqx.nn.Linear(WIDTH, MLP, key=k2)
            self.down = eqx.nn.Linear(MLP, WIDTH, key=k3)

        def __call__(self, x, mask):                      # one sequence: x (L, D)
            h = jax.vmap(self.norm1)(x)
            x = x + self.attn(h, h, h, mask=mask)
            h = jax.vmap(self.norm2)(x)
            return x + jax.vmap(self.down)(_gelu(jax.vmap(self.up)(h)))

    class Model(eqx.Module):
        layers: list

        def __init__(self, key):
            keys = jax.random.split(key, 6)
            if w.name == "gpt":
                self.layers = [eqx.nn.Embedding(w.vocab, WIDTH, key=keys[0]),
                               eqx.nn.Embedding(w.length, WIDTH, key=keys[1]),
                               *[Block(k) for k in keys[2:2 + DEPTH]],
                               eqx.nn.LayerNorm(WIDTH), eqx.nn.Linear(WIDTH, w.vocab, key=keys[5])]
            elif w.name == "lstm":
                self.layers = [eqx.nn.Embedding(w.vocab, EMBED, key=keys[0]),
                               eqx.nn.LSTMCell(EMBED, HIDDEN, key=keys[1]),
                               eqx.nn.Linear(HIDDEN, w.vocab, key=keys[2])]
            else:
                self.layers = [eqx.nn.Embedding(w.vocab, EMBED, key=keys[0]),
                               eqx.nn.Conv1d(EMBED, CHANNELS, KERNEL, padding=2, key=keys[1]),
                               eqx.nn.Conv1d(CHANNELS, CHANNELS, KERNEL, padding=2, key=keys[2]),
                               eqx.nn.Linear(CHANNELS, w.vocab, key=keys[3])]

        def __call__(self, ids):                          # one sequence: ids (L,)
            if w.name == "gpt":
                tok, pos, *blocks, norm, head = self.layers
                x = jax.vmap(tok)(ids) + jax.vmap(pos)(jnp.arange(ids.shape[0]))
                mask = jnp.tril(jnp.ones((ids.shape[0], ids.shape[0]), bool))
                for block in blocks:
                    x = block(x, mask)
                return jax.vmap(head)(jax.vmap(norm)(x))
            if w.name == "lstm":
                embed, cell, head = self.layers
                zeros = jnp.zeros(HIDDEN)

                def step(carry, x):
                    carry = cell(x, carry)
                    return carry, carry[0]

                _, hs = jax.lax.scan(step, (zeros, zeros), jax.vmap(embed)(ids))
                return jax.vmap(head)(hs)
            embed, c1, c2, head = self.layers
            h = jax.nn.relu(c2(jax.nn.relu(c1(jax.vmap(embed)(ids).T))))   # (C, L)
            return jax.vmap(head)(h.T)

    def make():
        x, y = w.data()
        return equinox_run(Model(jax.random.key(0)), optax.adam(LEARNING_RATE), x, y)

    return make


# ---- PyTorch eager ------------------------------------------------------------------------

def pytorch(w: SequenceWorkload) -> Callable[[], Run]:
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm1, self.norm2 = nn.LayerNorm(WIDTH), nn.LayerNorm(WIDTH)
            self.attn = nn.MultiheadAttention(WIDTH, HEADS, batch_first=True)
            self.mlp = nn.Sequential(nn.Linear(WIDTH, MLP), nn.GELU(), nn.Linear(MLP, WIDTH))

        def forward(self, x, mask):
            h = self.norm1(x)
            x = x + self.attn(h, h, h, attn_mask=mask, need_weights=False, is_causal=True)[0]
            return x + self.mlp(self.norm2(x))

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            if w.name == "gpt":
                self.tok, self.pos = nn.Embedding(w.vocab, WIDTH), nn.Embedding(w.length, WIDTH)
                self.blocks = nn.ModuleList([Block() for _ in range(DEPTH)])
                self.norm, self.head = nn.LayerNorm(WIDTH), nn.Linear(WIDTH, w.vocab)
                self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(
                    w.length))
            elif w.name == "lstm":
                self.embed = nn.Embedding(w.vocab, EMBED)
                self.rnn = nn.LSTM(EMBED, HIDDEN, batch_first=True)
                self.head = nn.Linear(HIDDEN, w.vocab)
            else:
                self.embed = nn.Embedding(w.vocab, EMBED)
                self.convs = nn.Sequential(
                    nn.Conv1d(EMBED, CHANNELS, KERNEL, padding=2), nn.ReLU(),
                    nn.Conv1d(CHANNELS, CHANNELS, KERNEL, padding=2), nn.ReLU())
                self.head = nn.Linear(CHANNELS, w.vocab)

        def forward(self, ids):
            if w.name == "gpt":
                x = self.tok(ids) + self.pos.weight
                for block in self.blocks:
                    x = block(x, self.mask)
                return self.head(self.norm(x))
            if w.name == "lstm":
                return self.head(self.rnn(self.embed(ids))[0])
            return self.head(self.convs(self.embed(ids).transpose(1, 2)).transpose(1, 2))

    def make():
        torch.manual_seed(0)
        device = torch_device(torch)
        model = Model().to(device)
        opt = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
        x, y = (torch.tensor(np.asarray(a), dtype=torch.long, device=device) for a in w.data())

        def run():
            opt.zero_grad(set_to_none=True)
            logits = model(x)
            loss = nn.functional.cross_entropy(logits.reshape(-1, w.vocab), y.reshape(-1))
            loss.backward()
            opt.step()
            torch_finish(torch, device)
            return None  # eager: the step has finished when it returns

        return run

    return make


SEQUENCE_PEERS: dict[str, Callable[[SequenceWorkload], Callable[[], Run]]] = {
    "minitorch": minitorch, "raw JAX": raw_jax, "Flax linen": flax_linen,
    "Flax NNX": flax_nnx, "Haiku": haiku, "Equinox": equinox, "PyTorch eager": pytorch,
}
