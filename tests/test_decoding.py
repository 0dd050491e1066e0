"""Decoding: init_cache / apply(cache=) against full-sequence apply, call.offset,
nn.generate against argmax recompute and PyTorch-free references, cache errors."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

from minitorch import nn
from minitorch.errors import ArgumentError, CacheError, KeywordError
from tests.helpers import Block, decode_in_chunks

VOCAB, WIDTH, LENGTH = 11, 16, 12


class LM(nn.Composite):
    """Tokens, learned positions read at call.offset, a tuple of blocks, a head."""

    tokens: nn.Layer
    positions: nn.Layer
    blocks: tuple
    head: nn.Layer

    def forward(self, call, ids):
        x = call("tokens", ids) + call("positions", call.offset + jnp.arange(ids.shape[1]))
        for i in range(len(self.blocks)):
            x = call(f"blocks.{i}", x)
        return call("head", x)


def lm(depth=2):
    def block():
        return Block(nn.LayerNorm(WIDTH), nn.MultiHeadAttention(WIDTH, 2, causal=True),
                     nn.Net([nn.Linear(WIDTH, WIDTH), nn.GELU()]))

    return LM(tokens=nn.Embedding(VOCAB, WIDTH), positions=nn.Embedding(LENGTH, WIDTH),
              blocks=[block() for _ in range(depth)], head=nn.Linear(WIDTH, VOCAB))


class RecurrentLM(nn.Composite):
    tokens: nn.Layer
    rnn: nn.Layer
    head: nn.Layer

    def forward(self, call, ids):
        return call("head", call("rnn", call("tokens", ids)))


def recurrent_lm(kind):
    return RecurrentLM(nn.Embedding(VOCAB, WIDTH), getattr(nn, kind)(WIDTH, WIDTH),
                       nn.Linear(WIDTH, VOCAB))


def ids(n=2, length=LENGTH, seed=0):
    return jnp.asarray(np.random.default_rng(seed).integers(0, VOCAB, (n, length)), jnp.int32)


class CacheEqualsFullTest(chex.TestCase, parameterized.TestCase):

    @parameterized.parameters(((LENGTH,),), ((5, 1, 1, 5),), ((1,) * LENGTH,))
    def test_transformer(self, chunks):
        model = lm()
        params = model.init(jax.random.key(0))
        x = ids()
        full = jax.jit(model.apply)(params, x)
        got, cache = decode_in_chunks(model, params, x, chunks)
        np.testing.assert_allclose(got, full, rtol=1e-5, atol=1e-5)
        self.assertEqual(int(cache["blocks"][1]["attn"]["index"]), LENGTH)
        self.assertEqual(cache["tokens"], {})           # nothing to cache: {}

    @parameterized.parameters("RNN", "LSTM", "GRU")
    def test_recurrent(self, kind):
        model = recurrent_lm(kind)
        params = model.init(jax.random.key(1))
        x = ids()
        got, cache = decode_in_chunks(model, params, x, (4, 1, 7))
        np.testing.assert_allclose(got, jax.jit(model.apply)(params, x), rtol=1e-5, atol=1e-5)
        self.assertEqual(sorted(cache["rnn"]), sorted([*getattr(nn, kind).carry_names,
                                                       "index", "max_length"]))

    @chex.variants(with_jit=True, without_jit=True)
    def test_under_jit_and_in_a_net(self):
        net = nn.Net([nn.Embedding(VOCAB, WIDTH), nn.MultiHeadAttention(WIDTH, 4, causal=True),
                      nn.Linear(WIDTH, VOCAB)])
        params = net.init(jax.random.key(2))
        x = ids()
        step = self.variant(lambda p, v, c: net.apply(p, v, cache=c))
        cache = net.init_cache(2, LENGTH)
        first, cache = step(params, x[:, :7], cache)
        second, cache = step(params, x[:, 7:], cache)
        np.testing.assert_allclose(jnp.concatenate([first, second], 1), net.apply(params, x),
                                   rtol=1e-5, atol=1e-5)

    def test_offset_is_zero_without_a_cache_and_the_same_in_nested_composites(self):
        seen = []

        class Inner(nn.Composite):
            f: nn.Layer

            def forward(self, call, x):
                seen.append(("inner", call.offset))
                return call("f", x)

        class Outer(nn.Composite):
            attn: nn.Layer
            inner: nn.Layer

            def forward(self, call, x):
                seen.append(("outer", call.offset))
                return call("inner", call("attn", x))

        model = Outer(nn.MultiHeadAttention(4, 1, causal=True), Inner(nn.ReLU()))
        params = model.init(jax.random.key(0))
        x = jnp.ones((1, 3, 4))
        model.apply(params, x)
        self.assertEqual(seen, [("outer", 0), ("inner", 0)])
        seen.clear()
        cache = model.init_cache(1, 8)
        _, cache = model.apply(params, x, cache=cache)
        _, cache = model.apply(params, x[:, :2], cache=cache)
        self.assertEqual([(w, int(o)) for w, o in seen],
                         [("outer", 0), ("inner", 0), ("outer", 3), ("inner", 3)])


class CacheErrorTest(parameterized.TestCase):

    def test_past_max_length_names_the_layer(self):
        model = lm()
        params = model.init(jax.random.key(0))
        cache = model.init_cache(2, 6)
        _, cache = model.apply(params, ids(length=4), cache=cache)
        with pytest.raises(CacheError, match=r"^blocks\.0 \(Block\) > attn "
                                             r"\(MultiHeadAttention\): the cache holds 4 of "
                                             r"max_length=6 positions, received 3 more"):
            model.apply(params, ids(length=3), cache=cache)
        # Under jit the count is not known when tracing: those outputs are NaN.
        y, _ = jax.jit(lambda c: model.apply(params, ids(length=3), cache=c))(cache)
        self.assertTrue(bool(jnp.all(jnp.isnan(y))))
        rnn = nn.LSTM(3, 4)
        cache = rnn.init_cache(1, 2)
        with pytest.raises(CacheError, match=r"^LSTM: the cache holds 0 of max_length=2"):
            rnn.apply(rnn.init(jax.random.key(0)), jnp.ones((1, 3, 3)), cache=cache)

    def test_another_batch_size_names_both(self):
        model = lm()
        params = model.init(jax.random.key(0))
        with pytest.raises(CacheError, match=r"^blocks\.0 \(Block\) > attn "
                                             r"\(MultiHeadAttention\): the cache was built for "
                                             r"batch size 3, received a batch of 2"):
            model.apply(params, ids(), cache=model.init_cache(3, LENGTH))
        with pytest.raises(CacheError, match=r"^rnn \(GRU\): the cache was built for batch "
                                             r"size 1, received a batch of 2"):
            m = recurrent_lm("GRU")
            m.apply(m.init(jax.random.key(0)), ids(), cache=m.init_cache(1, LENGTH))

    def test_structure_and_misuse(self):
        model = lm()
        params = model.init(jax.random.key(0))
        with pytest.raises(CacheError, match=r"LM: expected cache as a dict with keys"):
            model.apply(params, ids(), cache=[])
        attn = nn.MultiHeadAttention(4, 1, causal=True)
        with pytest.raises(CacheError, match="only causal self-attention decodes"):
            attn.apply(attn.init(jax.random.key(0)), (jnp.ones((1, 2, 4)), jnp.ones((1, 3, 4))),
                       cache=attn.init_cache(1, 4))
        self.assertEqual(nn.MultiHeadAttention(4, 1).init_cache(1, 4), {})
        lstm = nn.LSTM(2, 3)
        with pytest.raises(CacheError, match="give initial= or cache=, not both"):
            z = jnp.zeros((1, 3))
            lstm.apply(lstm.init(jax.random.key(0)), jnp.ones((1, 2, 2)), initial=(z, z),
                       cache=lstm.init_cache(1, 4))

    def test_a_users_leaf_without_a_cache_argument_works_in_a_decodable_model(self):
        class Double(nn.Layer):
            def apply(self, params, x, *, key=None, train=False):
                return 2 * x

        net = nn.Net([nn.Embedding(VOCAB, 4), Double(), nn.MultiHeadAttention(4, 1, causal=True)])
        params = net.init(jax.random.key(0))
        got, _ = decode_in_chunks(net, params, ids(), (3, 9))
        np.testing.assert_allclose(got, net.apply(params, ids()), rtol=1e-5, atol=1e-5)
        with pytest.raises(KeywordError, match="Net: apply"):
            net.apply(params, ids(), mask=None)


def argmax_by_recompute(model, params, prompt, steps, **inputs):
    """Greedy decoding without a cache: the whole sequence recomputed at every step, by one
    compiled forward over the final length, zero-padded (the model is causal: position t
    never sees the padding after it)."""
    forward = jax.jit(lambda x: model.apply(params, x, **inputs))
    length = prompt.shape[1]
    x = jnp.zeros((prompt.shape[0], length + steps), prompt.dtype).at[:, :length].set(prompt)
    for t in range(length, length + steps):
        x = x.at[:, t].set(jnp.argmax(forward(x)[:, t - 1], axis=-1).astype(x.dtype))
    return x


class GenerateTest(parameterized.TestCase):

    @parameterized.parameters("transformer", "LSTM")
    def test_greedy_equals_argmax_recompute_token_for_token(self, kind):
        model = lm() if kind == "transformer" else recurrent_lm(kind)
        params = model.init(jax.random.key(4))
        prompt = ids(n=3, length=2, seed=1)
        got = nn.generate(model, params, prompt, LENGTH - 2)
        self.assertEqual(got.shape, (3, LENGTH))
        np.testing.assert_array_equal(got, argmax_by_recompute(model, params, prompt,
                                                               LENGTH - 2))

    def test_a_decoder_with_cross_attention_takes_its_memory_at_every_step(self):
        class CrossBlock(nn.Composite):
            attn: nn.Layer
            cross: nn.Layer

            def forward(self, call, x, *, memory, memory_mask):
                x = x + call("attn", x)
                return x + call("cross", (x, memory), mask=memory_mask)

        class Decoder(nn.Composite):
            tokens: nn.Layer
            positions: nn.Layer
            block: nn.Layer
            head: nn.Layer

            def forward(self, call, ids, *, memory, memory_mask):
                x = call("tokens", ids) + call("positions",
                                               call.offset + jnp.arange(ids.shape[1]))
                return call("head", call("block", x, memory=memory, memory_mask=memory_mask))

        model = Decoder(nn.Embedding(VOCAB, WIDTH), nn.Embedding(LENGTH, WIDTH),
                        CrossBlock(nn.MultiHeadAttention(WIDTH, 2, causal=True),
                                   nn.MultiHeadAttention(WIDTH, 2)), nn.Linear(WIDTH, VOCAB))
        params = model.init(jax.random.key(2))
        memory = nn.init.normal(jax.random.key(3), (3, 5, WIDTH))
        memory_mask = jnp.arange(5)[None] < jnp.asarray([[5], [2], [1]])  # padded sources
        prompt = ids(n=3, length=1, seed=2)
        got = nn.generate(model, params, prompt, LENGTH - 1, memory=memory,
                          memory_mask=memory_mask)
        np.testing.assert_array_equal(got, argmax_by_recompute(  # the memory every time
            model, params, prompt, LENGTH - 1, memory=memory, memory_mask=memory_mask))
        other = nn.generate(model, params, prompt, LENGTH - 1, memory=-memory,
                            memory_mask=memory_mask)
        self.assertFalse(bool(jnp.all(other == got)))  # the memory is read, not ignored
        with pytest.raises(KeywordError, match="memry"):
            nn.generate(model, params, prompt, 2, memry=memory, memory_mask=memory_mask)

    def test_sampling_is_seeded_and_top_k_restricts(self):
        model = lm()
        params = model.init(jax.random.key(4))
        prompt = ids(n=64, length=1)
        a = nn.generate(model, params, prompt, 5, key=jax.random.key(1), temperature=1.0)
        b = nn.generate(model, params, prompt, 5, key=jax.random.key(1), temperature=1.0)
        c = nn.generate(model, params, prompt, 5, key=jax.random.key(2), temperature=1.0)
        np.testing.assert_array_equal(a, b)
        self.assertFalse(bool(jnp.all(a == c)))
        one = nn.generate(model, params, prompt, 5, key=jax.random.key(1), temperature=1.0,
                          top_k=1)
        np.testing.assert_array_equal(one, nn.generate(model, params, prompt, 5))
        # top_k=2: the first new id is one of the two most likely after the prompt.
        two = nn.generate(model, params, prompt, 1, key=jax.random.key(3), temperature=5.0,
                          top_k=2)
        best = jnp.argsort(model.apply(params, prompt)[:, -1], axis=-1)[:, -2:]
        self.assertTrue(bool(jnp.all(jnp.any(two[:, 1:] == best, axis=-1))))
        self.assertGreater(len(set(np.asarray(two[:, 1]).tolist())), 1)

    def test_sampling_follows_the_softmax(self):
        # A model whose logits ignore the input: the first sampled id's frequencies are
        # softmax(logits / temperature).
        class Fixed(nn.Layer):
            def init(self, key):
                return {"logits": jnp.log(jnp.asarray([0.5, 0.3, 0.2]))}

            def apply(self, params, x, *, key=None, train=False):
                return jnp.broadcast_to(params["logits"], (*x.shape, 3))

        counts = np.bincount(np.asarray(nn.generate(
            Fixed(), Fixed().init(jax.random.key(0)), jnp.zeros((4000, 1), jnp.int32), 1,
            key=jax.random.key(0), temperature=1.0)[:, 1]), minlength=3) / 4000
        np.testing.assert_allclose(counts, [0.5, 0.3, 0.2], atol=0.03)

    def test_compiled_once_for_the_same_shapes(self):
        traces = []

        class Counted(nn.Layer):
            def apply(self, params, x, *, key=None, train=False):
                traces.append(x.shape)
                return x

        model = nn.Net([nn.Embedding(VOCAB, 8), Counted(),
                        nn.MultiHeadAttention(8, 2, causal=True), nn.Linear(8, VOCAB)])
        params = model.init(jax.random.key(0))
        nn.generate(model, params, ids(length=3), 4, key=jax.random.key(0), temperature=1.0)
        first = len(traces)
        nn.generate(model, params, ids(length=3, seed=5), 4, key=jax.random.key(1),
                    temperature=0.5)
        self.assertEqual(len(traces), first)

    def test_bad_arguments(self):
        model = lm()
        params = model.init(jax.random.key(0))
        with pytest.raises(ArgumentError, match="generate: max_new_tokens must be a positive"):
            nn.generate(model, params, ids(), 0)
        with pytest.raises(TypeError, match=r"generate: temperature=1.0 samples: pass key"):
            nn.generate(model, params, ids(), 2, temperature=1.0)
        with pytest.raises(TypeError, match="generate: expected integer prompt ids"):
            nn.generate(model, params, jnp.ones((1, 2)), 2)
        with pytest.raises(ValueError, match=r"generate: expected prompt ids of shape \(N, P\)"):
            nn.generate(model, params, jnp.ones((2,), jnp.int32), 2)
