"""The paper tasks: architectures, losses, specs as true symmetries, data iterators."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from unf_lopt import tasks
import unf_lopt as U
from unf_lopt.tasks import data, models, tokenizers
from unf_lopt.permutations import permute, sample_permutations

ALL_TASKS = list(tasks.registered_tasks())


def random_batch(task, seed=0):
  """A batch of random data with the shapes of the task's real batches."""
  rng = np.random.default_rng(seed)
  batch = task.dummy_batch()
  if "image" in batch:
    return {"image": rng.uniform(size=batch["image"].shape).astype(np.float32),
            "label": rng.integers(0, task.num_classes, batch["label"].shape).astype(np.int32)}
  tokens = rng.integers(tokenizers.NUM_SPECIAL, task.num_classes, batch["tokens"].shape)
  tokens[:, -2:] = tokenizers.PAD_ID  # some padding, which the loss must mask
  return {"tokens": tokens.astype(np.int32)}


def randomized_params(task, seed=0):
  """Random params of the task's shapes, so no symmetry holds by accident (e.g. zero biases).

  The shapes come from `jax.eval_shape` and the values from numpy: an eager flax init
  compiles every operation it runs and takes seconds per task.
  """
  rng = np.random.default_rng(seed)

  def draw(leaf):
    fan_in = max(1, leaf.size // leaf.shape[-1]) if leaf.ndim >= 2 else 1
    return (rng.normal(size=leaf.shape) / np.sqrt(fan_in)).astype(np.float32)

  return jax.tree.map(draw, jax.eval_shape(task.init, jax.random.PRNGKey(0)))


@pytest.mark.parametrize("name", ALL_TASKS)
def test_spec_is_a_true_symmetry_of_the_loss_on_hidden_axes(name):
  task = tasks.get_task(name)
  params = randomized_params(task)
  spec = task.spec(params)
  sizes = U.validate_spec(spec, params)
  assert task.io_axes <= set(sizes), (task.io_axes, sizes)
  batch = random_batch(task)
  loss_fn = jax.jit(task.loss)  # one compilation instead of one per operation
  loss = float(loss_fn(params, batch))
  rng = np.random.default_rng(0)
  for _ in range(2):
    perms = sample_permutations(rng, spec, params)
    hidden = {axis: p for axis, p in perms.items() if axis not in task.io_axes}
    assert any((p != np.arange(len(p))).any() for p in hidden.values())
    permuted = permute(params, spec, hidden)
    assert float(loss_fn(permuted, batch)) == pytest.approx(loss, rel=1e-5, abs=1e-6)
  # The io axes index the data: permuting one without relabelling the data is
  # not a symmetry, so the check above could fail.
  io_axis = sorted(task.io_axes)[0]
  shuffled = permute(params, spec, {io_axis: np.roll(np.arange(sizes[io_axis]), 1)})
  assert abs(float(loss_fn(shuffled, batch)) - loss) > 1e-4


def shapes_of(task):
  """The task's parameter shapes, traced without running (eager flax init takes seconds)."""
  return jax.tree.map(lambda leaf: leaf.shape, jax.eval_shape(task.init, jax.random.PRNGKey(0)))


def test_paper_architectures():
  mlp = shapes_of(tasks.get_task("mlp_fmnist"))
  assert mlp == {"Dense_0": {"kernel": (64, 32), "bias": (32,)},
                 "Dense_1": {"kernel": (32, 10), "bias": (10,)}}
  cnn_task = tasks.get_task("cnn_cifar10")
  cnn = shapes_of(cnn_task)
  assert cnn["Conv_0"]["kernel"] == (3, 3, 3, 16)
  assert cnn["Conv_1"]["kernel"] == (3, 3, 16, 32)
  assert cnn["Dense_0"]["kernel"] == (32, 10)
  assert cnn_task.dummy_batch()["image"].shape == (128, 16, 16, 3)
  assert tasks.get_task("cnn_cifar10", image_size=8).dummy_batch()["image"].shape == (128, 8, 8, 3)
  transformer_task = tasks.get_task("transformer_lm1b")
  transformer = shapes_of(transformer_task)
  attention = transformer["Block_0"]["MultiHeadDotProductAttention_0"]
  assert attention["query"]["kernel"] == (32, 4, 32)
  assert attention["out"]["kernel"] == (4, 32, 32)
  assert transformer["Block_1"]["Dense_0"]["kernel"] == (32, 128)
  assert transformer["Embed_0"]["embedding"] == (32_000, 32)
  assert transformer["Dense_0"]["kernel"] == (32, 32_000)
  assert "LayerNorm_0" in transformer and "Block_2" not in transformer
  assert transformer_task.dummy_batch()["tokens"].shape == (8, 9)


def test_paper_rnn_architecture_and_initialisation():
  rnn = tasks.get_task("rnn_lm1b")
  params = jax.jit(rnn.init)(jax.random.PRNGKey(0))
  assert models.count_params(params) == (
      259 * 32 + (32 * 64 + 64) + (64 * 64 + 64) + 64 + (64 * 259 + 259))
  np.testing.assert_array_equal(params["rnn"]["cell"]["recurrent"]["kernel"], np.eye(64))
  np.testing.assert_array_equal(params["rnn"]["initial_state"], np.zeros((1, 64)))
  assert rnn.dummy_batch()["tokens"].shape == (64, 17)


def test_rnn_matches_a_hand_written_recurrence():
  task = tasks.get_task("tiny_rnn")
  params = randomized_params(task)
  tokens = random_batch(task)["tokens"][:, :-1]
  logits = task.model.apply({"params": params}, tokens)
  p = jax.tree.map(np.asarray, params)
  state = np.broadcast_to(p["rnn"]["initial_state"], (tokens.shape[0], 16))
  for t in range(tokens.shape[1]):
    x = p["embed"]["embedding"][tokens[:, t]]
    recurrent = p["rnn"]["cell"]["recurrent"]
    pre = (x @ p["rnn"]["input"]["kernel"] + p["rnn"]["input"]["bias"]
           + state @ recurrent["kernel"] + recurrent["bias"])
    state = np.maximum(pre, 0.0)
    expected = state @ p["head"]["kernel"] + p["head"]["bias"]
    np.testing.assert_allclose(logits[:, t], expected, rtol=1e-5, atol=1e-5)


def test_transformer_is_causal():
  task = tasks.get_task("tiny_transformer")
  params = randomized_params(task)
  tokens = random_batch(task)["tokens"][:, :-1]
  changed = tokens.copy()
  changed[:, 5:] = (changed[:, 5:] + 7) % task.num_classes
  before = task.model.apply({"params": params}, tokens)
  after = task.model.apply({"params": params}, changed)
  np.testing.assert_allclose(before[:, :5], after[:, :5], rtol=1e-6, atol=1e-6)
  assert not np.allclose(before[:, 5:], after[:, 5:])


def test_language_loss_masks_padding_and_matches_a_direct_computation():
  task = tasks.get_task("tiny_rnn")
  params = randomized_params(task)
  batch = random_batch(task)
  logits = np.asarray(task.model.apply({"params": params}, batch["tokens"][:, :-1]), np.float64)
  targets = batch["tokens"][:, 1:]
  log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  picked = np.take_along_axis(log_probs, targets[..., None], -1)[..., 0]
  keep = targets != tokenizers.PAD_ID
  assert 0 < keep.sum() < keep.size
  assert float(task.loss(params, batch)) == pytest.approx(-picked[keep].mean(), rel=1e-5)
  # Changing what the model predicts at padded positions changes nothing.
  other = {"tokens": batch["tokens"].copy()}
  other["tokens"][:, -1] = tokenizers.PAD_ID
  other["tokens"][:, -2] = tokenizers.PAD_ID
  assert float(task.loss(params, other)) == pytest.approx(float(task.loss(params, batch)))


def test_image_loss_matches_a_direct_computation():
  task = tasks.get_task("tiny_mlp")
  params = randomized_params(task)
  batch = random_batch(task)
  p = jax.tree.map(np.asarray, params)
  x = batch["image"].reshape(len(batch["image"]), -1).astype(np.float64)
  hidden = np.maximum(x @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"], 0)
  logits = hidden @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"]
  log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  expected = -log_probs[np.arange(len(x)), batch["label"]].mean()
  assert float(task.loss(params, batch)) == pytest.approx(expected, rel=1e-5)
  metrics = task.metrics(params, batch)
  assert float(metrics["accuracy"]) == pytest.approx(np.mean(logits.argmax(-1) == batch["label"]))


def test_normalizer_clips_at_one_and_a_half_log_classes():
  task = tasks.get_task("tiny_mlp")
  assert float(task.normalizer(jnp.asarray(100.0))) == pytest.approx(1.5 * math.log(10))
  assert float(task.normalizer(jnp.asarray(1.25))) == pytest.approx(1.25)
  assert float(task.normalizer(jnp.asarray(-1.0))) == 0.0


@pytest.mark.parametrize("name", ["tiny_mlp", "tiny_cnn", "tiny_rnn", "tiny_transformer"])
def test_tiny_task_data(name):
  task = tasks.get_task(name)
  train, valid, test = (task.data_arrays(split) for split in ("train", "valid", "test"))
  key = "image" if "image" in train else "tokens"
  assert len(valid[key]) == round(0.1 * (len(train[key]) + len(valid[key])))
  if key == "image":
    # Train and valid are disjoint parts of the dataset's training split.
    flat = lambda a: {row.tobytes() for row in a["image"]}
    assert not flat(train) & flat(valid)
    for split in (train, valid, test):
      assert split["image"].dtype == np.float32 and split["label"].dtype == np.int32
      assert 0.0 <= split["image"].min() and split["image"].max() <= 1.0
      assert split["image"].max() > 0.5
      assert set(np.unique(split["label"])) <= set(range(10))
  else:
    for split in (train, valid, test):
      tokens = split["tokens"]
      assert tokens.dtype == np.int32 and tokens.min() >= 0 and tokens.max() < task.num_classes
      # Every row is a sentence start: EOS appears once the sentence fits.
      assert (tokens[:, 0] >= tokenizers.NUM_SPECIAL).all()
  dummy = task.dummy_batch()
  batch = next(task.datasets.train)
  assert {k: (v.shape, v.dtype) for k, v in batch.items()} == \
         {k: (v.shape, v.dtype) for k, v in dummy.items()}


def test_batches_are_deterministic_per_seed_and_cover_an_epoch():
  task = tasks.get_task("tiny_mlp")
  first = [next(it) for it in [task.dataset("train", seed=3)] for _ in range(2)]
  again = task.dataset("train", seed=3)
  for batch in first:
    np.testing.assert_array_equal(batch["image"], next(again)["image"])
  other = next(task.dataset("train", seed=4))
  assert not np.array_equal(first[0]["image"], other["image"])
  # One epoch visits each example at most once.
  arrays = task.data_arrays("train")
  per_epoch = len(arrays["label"]) // task.batch_size
  iterator = task.dataset("train", seed=0)
  rows = np.concatenate([next(iterator)["image"].reshape(task.batch_size, -1)
                         for _ in range(per_epoch)])
  assert len({r.tobytes() for r in rows}) == len(rows)


@pytest.mark.parametrize("name", ["tiny_mlp", "tiny_rnn"])
def test_adam_lowers_the_loss_of_a_tiny_task(name):
  task = tasks.get_task(name)
  params = jax.jit(task.init)(jax.random.PRNGKey(0))  # the real init: training depends on it
  optimizer = optax.adam(1e-2)
  state = optimizer.init(params)

  @jax.jit
  def step(params, state, batch):
    loss, grads = jax.value_and_grad(task.loss)(params, batch)
    updates, state = optimizer.update(grads, state)
    return optax.apply_updates(params, updates), state, loss

  batches = task.dataset("train", seed=0)
  losses = [float(step(params, state, next(batches))[2])]
  for _ in range(60):
    params, state, loss = step(params, state, next(batches))
    losses.append(float(loss))
  assert np.mean(losses[-10:]) < 0.8 * losses[0]


def test_rnn_spec_reproduces_the_paper_unf_count():
  task = tasks.get_task("rnn_lm1b")
  params = jax.eval_shape(task.init, jax.random.PRNGKey(0))
  lopt = U.NominalLOpt("unf", spec=task.spec(params), params_like=params)
  assert models.count_params(jax.eval_shape(lopt.init, jax.random.PRNGKey(0))) == 8_043


def test_task_family_instances_differ_by_seed_and_share_shapes():
  family = tasks.get_task_family("tiny_mlp")
  init = jax.jit(family.init)
  a, b = (init(family.sample(jax.random.PRNGKey(seed))) for seed in (0, 1))
  assert jax.tree.map(jnp.shape, a) == jax.tree.map(jnp.shape, b)
  assert not np.allclose(a["Dense_0"]["kernel"], b["Dense_0"]["kernel"])
  assert family.task_fn(family.sample(jax.random.PRNGKey(0))) is family.task


def test_unknown_task_names_close_matches():
  with pytest.raises(KeyError, match="mlp_fmnist"):
    tasks.get_task("mlp_fminst")


def test_cifar10_without_data_says_how_to_prepare_and_names_the_stand_in(tmp_path):
  task = tasks.get_task("cnn_cifar10", data_dir=tmp_path)
  task.spec(jax.eval_shape(task.init, jax.random.PRNGKey(0)))  # they need no data
  with pytest.raises(data.DatasetNotPreparedError) as error:
    next(task.datasets.train)
  message = str(error.value)
  assert f"unf-data prepare cifar10 --from cifar-10-binary.tar.gz --data-dir {tmp_path}" in message
  assert "cnn_fmnist_standin" in message


def test_language_tasks_fall_back_to_the_shipped_corpus_with_a_notice(tmp_path, capsys):
  task = tasks.get_task("rnn_lm1b", data_dir=tmp_path)
  assert task.corpus_used == "brown_corpus"
  assert "lm1b is not prepared" in capsys.readouterr().err
