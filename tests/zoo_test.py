"""The Tiny RNN Zoo: addition encoding, exact-match success, spec symmetry, deterministic builds."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from unf_lopt.tasks.zoo import addition, generate
from unf_lopt.permutations import permute, sample_permutations


def test_vectorised_encoding_matches_the_reference_encoder():
  inputs, targets = addition.sample_problems(jax.random.PRNGKey(0), 200)
  for row_in, row_target in zip(np.asarray(inputs), np.asarray(targets)):
    a, b = addition.decode(row_in)[:-1].split("+")
    assert 1 <= len(a) <= 5 and 1 <= len(b) <= 5 and (a == "0" or a[0] != "0")
    expected_in, expected_target = addition.encode_problem(int(a), int(b))
    np.testing.assert_array_equal(row_in, expected_in)
    np.testing.assert_array_equal(row_target, expected_target)
  assert addition.decode(addition.encode_problem(99999, 99999)[1]) == "199998<EOS>"


@pytest.mark.parametrize("max_digits", [1, 2, 3])
def test_fewer_digits_give_shorter_problems_with_every_operand_length(max_digits):
  inputs, targets = addition.sample_problems(jax.random.PRNGKey(4), 300, max_digits)
  assert inputs.shape == (300, addition.input_length(max_digits))
  assert targets.shape == (300, addition.target_length(max_digits))
  lengths = set()
  for row_in, row_target in zip(np.asarray(inputs), np.asarray(targets)):
    a, b = addition.decode(row_in)[:-1].split("+")
    lengths.update((len(a), len(b)))
    assert addition.decode(row_target) == f"{int(a) + int(b)}<EOS>"
    np.testing.assert_array_equal(row_in, addition.encode_problem(int(a), int(b), max_digits)[0])
  assert lengths == set(range(1, max_digits + 1))
  with pytest.raises(ValueError, match="1 to 2 digits"):
    addition.encode_problem(100, 1, max_digits=2)


def test_exact_match_on_hand_made_predictions():
  _, target = addition.encode_problem(15, 20)  # "35<EOS>" then padding
  P, E = addition.PAD, addition.EOS
  cases = {
      (3, 5, E, P, P, P, P): True,
      (3, 5, E, 7, 7, 7, 7): True,    # anything after EOS is ignored
      (3, 6, E, P, P, P, P): False,   # a wrong digit
      (3, 5, 0, E, P, P, P): False,   # an extra digit instead of EOS
      (3, 5, P, P, P, P, P): False,   # no EOS
  }
  predicted = jnp.asarray(list(cases), jnp.int32)
  result = addition.exact_match(predicted, jnp.broadcast_to(target, predicted.shape))
  assert result.tolist() == list(cases.values())


def test_zoo_spec_is_a_true_symmetry():
  model = addition.Seq2SeqGRU(hidden=6, embed_dim=5)
  inputs, targets = addition.sample_problems(jax.random.PRNGKey(1), 16)
  params = model.init(jax.random.PRNGKey(2), inputs, targets)["params"]
  params = jax.tree.map(lambda p: p + 0.3 * jax.random.normal(jax.random.PRNGKey(3), p.shape),
                        params)
  spec = addition.spec()
  perms = sample_permutations(np.random.default_rng(0), spec, params)
  hidden = {name: perm for name, perm in perms.items() if name != "vocab"}
  permuted = permute(params, spec, hidden)
  assert float(addition.loss(model, permuted, inputs, targets)) == pytest.approx(
      float(addition.loss(model, params, inputs, targets)), rel=1e-5)
  length = targets.shape[1]
  np.testing.assert_array_equal(
      model.apply({"params": permuted}, inputs, length, method=model.greedy),
      model.apply({"params": params}, inputs, length, method=model.greedy))
  # Permuting the vocabulary without relabelling the data is not a symmetry.
  shuffled = permute(params, spec, {"vocab": np.roll(np.arange(14), 1)})
  assert abs(float(addition.loss(model, shuffled, inputs, targets)) -
             float(addition.loss(model, params, inputs, targets))) > 1e-3


def test_hyperparameters_follow_the_paper_ranges():
  rates, batch_sizes = generate.hyperparameters(generate.ZooConfig.scaled(2000))
  assert 1e-4 <= rates.min() and rates.max() <= 1e-2
  # log-uniform: the log-midpoint 1e-3 splits the models in half
  assert 0.45 < np.mean(rates < 1e-3) < 0.55
  assert set(np.unique(batch_sizes)) == {64, 128, 256}


@pytest.mark.slow
def test_zoo_build_is_deterministic_resumable_and_independent_of_chunking(tmp_path):
  small = dict(hidden=4, embed_dim=3, train_steps=3, test_problems=8)
  first = generate.build(generate.ZooConfig.scaled(10, chunk_size=1, **small), tmp_path / "a",
                         quiet=True)
  other = generate.build(generate.ZooConfig.scaled(10, chunk_size=10, **small), tmp_path / "b",
                         quiet=True)
  a, b = generate.load_zoo(first), generate.load_zoo(other)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
  assert np.bincount(a["split"]).tolist() == [8, 1, 1]
  assert a["params"]["encoder"]["hn"]["kernel"].shape == (10, 4, 4)
  # Resume: a lost chunk is retrained to the same values.
  chunk = sorted((tmp_path / "a" / "chunks").glob("chunk_*.npz"))[1]
  chunk.unlink()
  again = generate.load_zoo(generate.build(generate.ZooConfig.scaled(10, chunk_size=1, **small),
                                           tmp_path / "a", quiet=True))
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(again)):
    np.testing.assert_array_equal(x, y)
  with pytest.raises(ValueError, match="another configuration"):
    generate.build(generate.ZooConfig.scaled(10, chunk_size=1, **dict(small, hidden=5)),
                   tmp_path / "a", quiet=True)
