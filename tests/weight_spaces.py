"""Small weight spaces (shapes + specs) shared by the tests."""

import numpy as np

import unf_lopt as U


def zeros_from_shapes(shapes):
  return {k: zeros_from_shapes(v) if isinstance(v, dict) else np.zeros(v, np.float32)
          for k, v in shapes.items()}


def mlp(sizes=(5, 4, 3)):
  params = zeros_from_shapes({f"Dense_{i}": {"kernel": (a, b), "bias": (b,)}
                            for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:]))})
  return params, U.mlp_spec(params)


def cnn(spatial=("h", "w")):
  params = zeros_from_shapes({
      "Conv_0": {"kernel": (2, 2, 3, 4), "bias": (4,)},
      "Conv_1": {"kernel": (2, 2, 4, 3), "bias": (3,)},
      "Dense_0": {"kernel": (3, 2), "bias": (2,)}})
  spec = {"Conv_0": U.conv_spec("c0", "c1", spatial=spatial),
          "Conv_1": U.conv_spec("c1", "c2", spatial=spatial),
          "Dense_0": U.dense_spec("c2", "c3")}
  return params, spec


def rnn(cell="simple"):
  gates = {"simple": {"i": {"kernel": (3, 4), "bias": (4,)}, "h": {"kernel": (4, 4)}},
           "gru": {"ir": {"kernel": (3, 4), "bias": (4,)}, "iz": {"kernel": (3, 4), "bias": (4,)},
                   "in": {"kernel": (3, 4), "bias": (4,)}, "hr": {"kernel": (4, 4)},
                   "hz": {"kernel": (4, 4)}, "hn": {"kernel": (4, 4), "bias": (4,)}}}[cell]
  params = zeros_from_shapes({
      "Embed_0": {"embedding": (5, 3)}, "cell": gates,
      "initial_state": (1, 4), "Dense_0": {"kernel": (4, 5), "bias": (5,)}})
  spec = {"Embed_0": U.embed_spec("vocab", "e"),
          "cell": U.recurrent_cell_spec("e", "h", cell=cell),
          "initial_state": (None, "h"),
          "Dense_0": U.dense_spec("h", "vocab")}
  return params, spec


def transformer(blocks=2, d=4, heads=2, head_dim=2, mlp_dim=5, vocab=6):
  shapes, spec = {"Embed_0": {"embedding": (vocab, d)}}, {"Embed_0": U.embed_spec("vocab", "d")}
  for b in range(blocks):
    shapes[f"Block_{b}"] = {
        "LayerNorm_0": {"scale": (d,), "bias": (d,)},
        "Attention": {"query": {"kernel": (d, heads, head_dim), "bias": (heads, head_dim)},
                      "key": {"kernel": (d, heads, head_dim), "bias": (heads, head_dim)},
                      "value": {"kernel": (d, heads, head_dim), "bias": (heads, head_dim)},
                      "out": {"kernel": (heads, head_dim, d), "bias": (d,)}},
        "LayerNorm_1": {"scale": (d,), "bias": (d,)},
        "Dense_0": {"kernel": (d, mlp_dim), "bias": (mlp_dim,)},
        "Dense_1": {"kernel": (mlp_dim, d), "bias": (d,)}}
    spec[f"Block_{b}"] = {
        "LayerNorm_0": U.layer_norm_spec("d"),
        "Attention": U.attention_spec("d", prefix=f"attn{b}"),
        "LayerNorm_1": U.layer_norm_spec("d"),
        "Dense_0": U.dense_spec("d", f"mlp{b}"),
        "Dense_1": U.dense_spec(f"mlp{b}", "d")}
  shapes["LayerNorm_f"] = {"scale": (d,), "bias": (d,)}
  shapes["Dense_head"] = {"kernel": (d, vocab), "bias": (vocab,)}
  spec["LayerNorm_f"] = U.layer_norm_spec("d")
  spec["Dense_head"] = U.dense_spec("d", "vocab")
  return zeros_from_shapes(shapes), spec


# One Transformer block holds every kind of tensor (embedding, attention, LayerNorm, MLP, head)
# at a fraction of two blocks' compile time; layers_test checks two blocks once, as a slow test.
ALL = {"mlp": mlp, "cnn": cnn, "cnn_fixed": lambda: cnn(spatial=(None, None)),
       "rnn": rnn, "gru": lambda: rnn("gru"), "transformer": lambda: transformer(blocks=1)}
