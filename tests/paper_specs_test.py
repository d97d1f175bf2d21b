"""The tasks' ``spec="paper"`` option (UNF paper, Table 3) and the byte-vocabulary Transformer."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import unf_lopt as U
from unf_lopt import tasks
from unf_lopt.meta_train.config import MetaTrainConfig
from unf_lopt.meta_train.trainer import MetaTrainer
from unf_lopt.permutations import permute
from unf_lopt.spec import is_axes, path_to_str
from unf_lopt.tasks import models, paper_specs, registry, tokenizers


def axes_by_path(spec):
  return {path_to_str(p): axes
          for p, axes in jax.tree_util.tree_flatten_with_path(spec, is_leaf=is_axes)[0]}

PAPER_TASKS = ["mlp_fmnist", "cnn_cifar10", "cnn_fmnist_standin", "rnn_lm1b", "transformer_lm1b"]
SCALARS = 3  # log_alpha, logit_g0, log_beta: Table 3 counts them with f


def count(tree):
  return sum(np.size(leaf) for leaf in jax.tree.leaves(tree))


def shapes(task):
  """Parameter shapes from tracing alone (an eager init compiles every operation)."""
  return jax.eval_shape(task.init, jax.random.PRNGKey(0))


def meta_param_count(update_net, task):
  params = shapes(task)
  lopt = U.NominalLOpt(update_net, spec=task.spec(params), params_like=params)
  return count(jax.eval_shape(lopt.init, jax.random.PRNGKey(0)))


def random_params(params_like, seed=0):
  """Normal entries scaled by 1/sqrt(fan-in), in numpy (no compilation per shape)."""
  rng = np.random.default_rng(seed)

  def draw(leaf):
    fan_in = max(1, leaf.size // leaf.shape[-1]) if leaf.ndim >= 2 else 1
    return (rng.normal(size=leaf.shape) / np.sqrt(fan_in)).astype(np.float32)

  return jax.tree.map(draw, params_like)


def max_difference(a, b):
  return max(float(jnp.max(jnp.abs(x - y))) for x, y in zip(jax.tree.leaves(a),
                                                              jax.tree.leaves(b)))


# ---------------------------------------------------------------------------
# Table 3 of the UNF paper (Zhou et al. 2024), every row, with spec="paper".

TABLE_3 = [
    ("mlp_fmnist", {}, "unf", 3_783), ("mlp_fmnist", {}, "deepset", 2_788),
    ("mlp_fmnist", {}, "nfn", 3_783),
    ("cnn_cifar10", {}, "unf", 7_369), ("cnn_cifar10", {}, "deepset", 2_788),
    ("rnn_lm1b", {}, "unf", 8_043), ("rnn_lm1b", {}, "deepset", 2_788),
    ("transformer_lm1b", {}, "unf", 64_168), ("transformer_lm1b", {}, "deepset", 2_788),
    # A UNF's size does not depend on widths: the byte vocabulary gives the same count.
    ("transformer_lm1b", {"tokenizer": "bytes"}, "unf", 64_168),
    ("cnn_fmnist_standin", {}, "unf", 7_369),
]


@pytest.mark.parametrize("name,options,update_net,expected", TABLE_3)
def test_paper_spec_reproduces_table_3(name, options, update_net, expected):
  task = tasks.get_task(name, spec="paper", **options)
  assert task.spec_kind == "paper"
  assert meta_param_count(update_net, task) == expected


def test_nfn_cnn_row_is_the_head_without_bias():
  task = tasks.get_task("cnn_cifar10", spec="paper")
  params = shapes(task)
  inputs = jax.tree.map(lambda p: jnp.zeros((*p.shape, 19), jnp.float32), params)
  spec = task.spec(params)

  def net_count(**options):
    net = U.UpdateNet("nfn", **options)
    return count(jax.eval_shape(lambda k: net.init(k, inputs, spec), jax.random.PRNGKey(0)))

  # NominalLOpt's NFN head has a bias (the MLP row needs it): 22 more than Table 3's CNN row,
  # 9 per 3x3 kernel (taps are channels of the NP layer) and 1 per dense kernel and bias.
  assert meta_param_count("nfn", task) == net_count() + SCALARS == 41_625
  assert net_count(nfn_head_bias=False) + SCALARS == 41_603
  assert net_count() - net_count(nfn_head_bias=False) == 9 + 1 + 9 + 1 + 1 + 1
  # The same row from the optimizer and from meta-training's setting.
  lopt = U.NominalLOpt("nfn", spec=spec, params_like=params, nfn_head_bias=False)
  assert count(jax.eval_shape(lopt.init, jax.random.PRNGKey(0))) == 41_603
  # Meta-training passes the setting on (tiny_cnn: the same CNN on embedded data).
  for bias, expected in ((True, 41_625), (False, 41_603)):
    config = MetaTrainConfig(task="tiny_cnn", task_options={"spec": "paper"}, update_net="nfn",
                             nfn_head_bias=bias)
    assert count(MetaTrainer(config).initial_meta_params) == expected
  # The NP layer ignores tap names: the true spec gives the same counts.
  true_task = tasks.get_task("cnn_cifar10")
  assert meta_param_count("nfn", true_task) == 41_625


# ---------------------------------------------------------------------------
# The default is the true spec, unchanged.


def test_default_spec_is_the_true_symmetry_unchanged():
  for name in PAPER_TASKS:
    assert tasks.get_task(name).spec_kind == "true"
  mlp = tasks.get_task("mlp_fmnist")
  assert mlp.spec(shapes(mlp)) == {"Dense_0": {"kernel": ("n0", "n1"), "bias": ("n1",)},
                                   "Dense_1": {"kernel": ("n1", "n2"), "bias": ("n2",)}}
  cnn = tasks.get_task("cnn_cifar10", spec="true")
  assert cnn.spec(shapes(cnn)) == {
      "Conv_0": {"kernel": (None, None, "c0", "c1"), "bias": ("c1",)},
      "Conv_1": {"kernel": (None, None, "c1", "c2"), "bias": ("c2",)},
      "Dense_0": {"kernel": ("c2", "classes"), "bias": ("classes",)}}
  # Fixed taps are channels: on this chain the UNF layer is the NP layer with a bias.
  assert meta_param_count("unf", cnn) == 41_625
  rnn = tasks.get_task("rnn_lm1b")
  assert rnn.spec(shapes(rnn)) == {
      "embed": {"embedding": ("vocab", "embed")},
      "rnn": {"input": {"kernel": ("embed", "hidden"), "bias": ("hidden",)},
              "cell": {"recurrent": {"kernel": ("hidden", "hidden"), "bias": ("hidden",)}},
              "initial_state": ("state", "hidden")},
      "head": {"kernel": ("hidden", "vocab"), "bias": ("vocab",)}}
  transformer = tasks.get_task("transformer_lm1b", tokenizer="bytes")
  params = shapes(transformer)
  assert "MultiHeadDotProductAttention_0" in params["Block_0"]
  tokens = np.zeros((1, 4), np.int32)
  traced = axes_by_path(U.infer_spec(
      params, lambda p, t: transformer.model.apply({"params": p}, t), (tokens,)))
  # The traced symmetry (token ids and logits fixed), plus the vocabulary permuted as in the paper.
  vocab_axes = {("Embed_0/embedding", 0), ("Dense_0/kernel", 1), ("Dense_0/bias", 0)}
  for path, axes in axes_by_path(transformer.spec(params)).items():
    for axis, name in enumerate(axes):
      if (path, axis) in vocab_axes:
        assert name == "Embed_0.vocab" and traced[path][axis] is U.FIXED
      else:
        assert name == traced[path][axis]
  assert transformer.io_axes == {"Embed_0.vocab"}
  # PAPER_FACTS: the true Transformer symmetry gives 81,320, not Table 3's 64,168.
  assert meta_param_count("unf", transformer) == 81_320


@pytest.mark.parametrize("name", ["mlp_fmnist", "rnn_lm1b", "tiny_mlp", "tiny_rnn"])
def test_paper_spec_is_the_true_spec_for_mlps_and_rnns(name):
  true_task, paper_task = tasks.get_task(name), tasks.get_task(name, spec="paper")
  params = shapes(true_task)
  assert paper_task.spec(params) == true_task.spec(params)
  assert paper_task.io_axes == true_task.io_axes


def test_cnn_paper_spec_names_every_tap_and_shares_the_first_with_the_input():
  task = tasks.get_task("tiny_cnn", spec="paper")
  params = shapes(task)
  spec = task.spec(params)
  assert spec["Conv_0"]["kernel"] == ("c0", "Conv_0.w", "c0", "c1")
  assert spec["Conv_1"]["kernel"] == ("Conv_1.h", "Conv_1.w", "c1", "c2")
  assert U.validate_spec(spec, params)["c0"] == 3
  assert task.io_axes <= set(U.validate_spec(spec, params))


def test_spec_option_is_validated_and_listed():
  for name in PAPER_TASKS + ["tiny_mlp", "tiny_cnn", "tiny_rnn"]:
    assert registry.task_options(name)["spec"].default == "true"
  assert "spec" not in registry.task_options("tiny_transformer")
  for bad in ["Paper", "infer", None]:
    with pytest.raises(ValueError, match=r"'true', 'paper'"):
      tasks.get_task("mlp_fmnist", spec=bad)
  with pytest.raises(ValueError, match=r"'true', 'paper'"):
    tasks.get_task("transformer_lm1b", spec="both", tokenizer="bytes")


def test_paper_transformer_spec_needs_the_flat_layout_and_equal_widths():
  default_layout = shapes(tasks.get_task("transformer_lm1b", tokenizer="bytes"))
  with pytest.raises(U.SpecError, match="flat_heads=True"):
    paper_specs.transformer_paper_spec(default_layout)
  model = models.TransformerLM(11, d_model=4, num_heads=2, key_size=2, mlp_dim=6, flat_heads=True)
  params = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 3), jnp.int32))
  with pytest.raises(U.SpecError, match="heads \\* key_size == mlp_dim"):
    paper_specs.transformer_paper_spec(params["params"])


# ---------------------------------------------------------------------------
# The paper specs that are not symmetries, numerically.


def test_cnn_paper_spec_is_not_a_symmetry():
  task = tasks.get_task("tiny_cnn", spec="paper")
  params = random_params(shapes(task))
  spec = task.spec(params)
  images = np.random.default_rng(1).uniform(size=(4, 8, 8, 3)).astype(np.float32)
  logits = jax.jit(lambda p, x: task.model.apply({"params": p}, x))
  reference = logits(params, images)
  roll = lambda size: np.roll(np.arange(size), 1)
  # Hidden channels are a true symmetry under both specs: the check can pass.
  assert max_difference(logits(permute(params, spec, {"c1": roll(4)}), images), reference) < 1e-5
  # Filter taps are not: permuting the second kernel's rows of taps changes the output.
  moved = permute(params, spec, {"Conv_1.h": roll(3)})
  assert max_difference(logits(moved, images), reference) > 1e-3
  # The name shared by the RGB axis and the first kernel's height: even with the image
  # channels relabelled, which makes it a symmetry under the true spec, the output changes.
  true_spec = tasks.get_task("tiny_cnn").spec(params)
  relabelled = images[..., roll(3)]
  assert max_difference(logits(permute(params, true_spec, {"c0": roll(3)}), relabelled),
                        reference) < 1e-5
  assert max_difference(logits(permute(params, spec, {"c0": roll(3)}), relabelled),
                        reference) > 1e-3


def small_transformer(flat_heads):
  model = models.TransformerLM(11, d_model=4, num_heads=2, key_size=3, mlp_dim=6,
                               flat_heads=flat_heads)
  tokens = np.random.default_rng(2).integers(0, 11, (2, 5)).astype(np.int32)
  params = jax.eval_shape(model.init, jax.random.PRNGKey(0), tokens)["params"]
  return model, tokens, random_params(params, seed=3)


def test_flat_heads_layout_computes_the_same_function():
  model, tokens, params = small_transformer(flat_heads=False)
  flat_model, _, _ = small_transformer(flat_heads=True)
  flat = dict(params)
  for block in ("Block_0", "Block_1"):
    attention = params[block]["MultiHeadDotProductAttention_0"]
    projections = {name: {"kernel": attention[name]["kernel"].reshape(4, 6),
                          "bias": attention[name]["bias"].reshape(6)}
                   for name in ("query", "key", "value")}
    projections["out"] = {"kernel": attention["out"]["kernel"].reshape(6, 4),
                          "bias": attention["out"]["bias"]}
    flat[block] = {key: value for key, value in params[block].items()
                   if key != "MultiHeadDotProductAttention_0"}
    flat[block]["FlatHeadsAttention_0"] = projections
  expected = jax.jit(model.apply)({"params": params}, tokens)
  np.testing.assert_allclose(jax.jit(flat_model.apply)({"params": flat}, tokens), expected,
                             atol=1e-5)


def test_transformer_paper_spec_is_not_a_symmetry():
  model, tokens, params = small_transformer(flat_heads=True)
  spec = paper_specs.transformer_paper_spec(params)
  assert U.validate_spec(spec, params) == {"vocab_in": 11, "stream0": 4, "hidden0": 6,
                                           "stream1": 4, "hidden1": 6, "stream2": 4,
                                           "vocab_out": 11}
  logits = jax.jit(lambda p: model.apply({"params": p}, tokens))
  reference = logits(params)
  rng = np.random.default_rng(4)
  # One permutation of the whole residual stream is a symmetry: the check can pass.
  stream = rng.permutation(4)
  same = {"stream0": stream, "stream1": stream, "stream2": stream}
  assert max_difference(logits(permute(params, spec, same)), reference) < 1e-5
  # The paper's separate stream names, and its name shared by the flat q/k/v axis and the
  # MLP hidden axis (a permutation mixing heads), are not.
  assert max_difference(logits(permute(params, spec, {"stream1": np.roll(stream, 1)})),
                        reference) > 1e-3
  assert max_difference(logits(permute(params, spec, {"hidden0": np.array([3, 1, 2, 0, 4, 5])})),
                        reference) > 1e-3


# ---------------------------------------------------------------------------
# The Transformer with a byte vocabulary (a CPU-scale deviation from the paper).


def test_byte_transformer_vocabulary_and_specs():
  for spec_kind in ("true", "paper"):
    task = tasks.get_task("transformer_lm1b", tokenizer="bytes", spec=spec_kind)
    assert task.num_classes == task.model.vocab_size == tokenizers.ByteTokenizer.vocab_size == 259
    assert isinstance(task.tokenizer, tokenizers.ByteTokenizer)
    params = shapes(task)
    assert params["Embed_0"]["embedding"].shape == (259, 32)
    assert params["Dense_0"]["kernel"].shape == (32, 259)
    sizes = U.validate_spec(task.spec(params), params)
    assert task.io_axes <= set(sizes)
  assert sizes["vocab_in"] == sizes["vocab_out"] == 259
  assert registry.task_options("transformer_lm1b")["tokenizer"].default == "sentencepiece"
  with pytest.raises(ValueError, match="'sentencepiece', 'bytes'"):
    tasks.get_task("transformer_lm1b", tokenizer="chars")
  with pytest.raises(ValueError, match="259 tokens"):
    tasks.get_task("transformer_lm1b", tokenizer="bytes", vocab_size=1000)


def test_byte_transformer_inits_and_has_a_finite_loss():
  # The paper layout here; the default one in the slow test below.
  task = tasks.get_task("transformer_lm1b", tokenizer="bytes", corpus="tiny_brown_corpus",
                        spec="paper")
  params = jax.jit(task.init)(jax.random.PRNGKey(0))
  batch = next(task.dataset("train"))
  assert batch["tokens"].shape == (8, 9) and batch["tokens"].max() < 259
  loss = float(jax.jit(task.loss)(params, batch))
  # At initialisation the predictions are close to uniform over the 259 tokens.
  assert np.isfinite(loss) and abs(loss - np.log(259)) < 1.0


@pytest.mark.slow
def test_byte_transformer_runs_offline_on_the_shipped_corpus(tmp_path):
  task = tasks.get_task("transformer_lm1b", tokenizer="bytes", data_dir=tmp_path)
  assert task.corpus_used == "brown_corpus"  # LM1B is not in the empty data dir
  params = jax.jit(task.init)(jax.random.PRNGKey(0))
  loss = float(jax.jit(task.loss)(params, next(task.dataset("train"))))
  assert np.isfinite(loss) and abs(loss - np.log(259)) < 1.0
