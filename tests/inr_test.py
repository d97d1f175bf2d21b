"""INRs: SIREN fitting quality, the dataset build, and the invariance of the INR classifiers."""

import jax
import numpy as np
import pytest

from unf_lopt.evaluate.experiments import inr_classification
from unf_lopt.tasks import inr
from unf_lopt.permutations import permute, sample_permutations


def test_siren_reconstructs_a_tiny_image_to_high_psnr():
  rng = np.random.default_rng(0)
  smooth = np.cumsum(np.cumsum(rng.normal(size=(1, 10, 10)), axis=1), axis=2)
  image = (smooth - smooth.min()) / (smooth.max() - smooth.min())
  params, fit_psnr = inr.fit_images(image, steps=300, learning_rate=1e-3, seed=0)
  model = inr.Siren((32, 32))
  one = jax.tree.map(lambda w: w[0], params)
  reconstruction = model.apply({"params": one}, inr.pixel_coordinates(10, 10)).reshape(10, 10)
  # The reported PSNR is the reconstruction's, recomputed here from its definition.
  mse = np.mean((np.asarray(reconstruction) - image[0]) ** 2)
  assert float(fit_psnr[0]) == pytest.approx(-10 * np.log10(mse), abs=0.05)
  assert float(fit_psnr[0]) > 30.0
  # An unfitted SIREN is far from the image: the fit did the work.
  untrained = model.init(jax.random.PRNGKey(0), inr.pixel_coordinates(10, 10))
  start_mse = np.mean((np.asarray(model.apply(untrained, inr.pixel_coordinates(10, 10)))
                       .reshape(10, 10) - image[0]) ** 2)
  assert -10 * np.log10(start_mse) < 15.0


def test_siren_spec_is_its_true_symmetry():
  model = inr.Siren((6, 5))
  coordinates = inr.pixel_coordinates(4, 4)
  params = model.init(jax.random.PRNGKey(1), coordinates)["params"]
  spec = inr.spec(params)
  assert spec["layers_0"]["kernel"] == (None, "n1") and spec["layers_2"]["bias"] == (None,)
  permuted = permute(params, spec, sample_permutations(np.random.default_rng(1), spec, params))
  np.testing.assert_allclose(model.apply({"params": permuted}, coordinates),
                             model.apply({"params": params}, coordinates), rtol=1e-5, atol=1e-6)


def test_build_is_resumable_and_keeps_images_labels_and_weights_aligned(tmp_path):
  config = inr.InrConfig(dataset="tiny_fashion_mnist", train=6, valid=2, test=3, hidden=(8,),
                         steps=5, chunk_size=4)
  path = inr.build(config, tmp_path / "a", quiet=True)
  first = inr.load_inrs(path)
  assert first["params"]["layers_0"]["kernel"].shape == (11, 2, 8)
  assert first["split"].tolist() == [0] * 6 + [1] * 2 + [2] * 3
  from unf_lopt.tasks import data
  train = data.load_images("tiny_fashion_mnist", "train")
  test = data.load_images("tiny_fashion_mnist", "test")
  np.testing.assert_array_equal(first["label"],
                                np.concatenate([train["label"][:8], test["label"][:3]]))
  # INR 7 (a valid one) is image 7 of the train split, fitted from its own key.
  alone, alone_psnr = inr.fit_images(train["image"][7:8, ..., 0] / 255.0, 5, config.learning_rate,
                                     config.seed, config.hidden, first_index=7)
  np.testing.assert_allclose(first["params"]["layers_1"]["kernel"][7],
                             alone["layers_1"]["kernel"][0], rtol=1e-5, atol=1e-6)
  assert first["psnr"][7] == pytest.approx(float(alone_psnr[0]), abs=1e-3)
  # A lost chunk is recomputed to the same values; another config is refused.
  sorted((tmp_path / "a" / "chunks").glob("chunk_*.npz"))[1].unlink()
  again = inr.load_inrs(inr.build(config, tmp_path / "a", quiet=True))
  for x, y in zip(jax.tree.leaves(first), jax.tree.leaves(again)):
    np.testing.assert_array_equal(x, y)
  with pytest.raises(ValueError, match="another configuration"):
    inr.build(inr.InrConfig(dataset="tiny_fashion_mnist", train=6, valid=2, test=3, hidden=(8,),
                            steps=6, chunk_size=4), tmp_path / "a", quiet=True)
  with pytest.raises(FileNotFoundError, match="unf-make-inrs"):
    inr.load_inrs(tmp_path / "missing" / "inrs.npz")


def _example_inr():
  model = inr.Siren((6, 5))
  params = model.init(jax.random.PRNGKey(2), inr.pixel_coordinates(3, 3))["params"]
  return jax.tree.map(lambda w: w + 0.2 * jax.random.normal(jax.random.PRNGKey(3), w.shape), params)


@pytest.mark.parametrize("kind", ["unf", "nfn", "deepset"])
def test_invariant_classifiers_ignore_hidden_permutations(kind):
  params = _example_inr()
  net, spec = inr_classification.make_classifier(kind, params, classes=4, channels=3, mlp_width=8)
  variables = jax.jit(net.init)(jax.random.PRNGKey(0), params)
  classify = jax.jit(net.apply)  # eagerly, every operation would compile on its own
  logits = np.asarray(classify(variables, params))
  assert logits.shape == (4,)
  rng = np.random.default_rng(0)
  for _ in range(3):
    permuted = permute(params, spec, sample_permutations(rng, spec, params))
    np.testing.assert_allclose(classify(variables, permuted), logits, rtol=1e-4, atol=1e-5)
  # Permuting the pixel coordinates (x <-> y) is not a symmetry of a SIREN: only NFN, whose
  # NP layers permute every axis, is blind to it.
  swapped = dict(params, layers_0=dict(params["layers_0"],
                                       kernel=params["layers_0"]["kernel"][::-1]))
  changed = np.abs(np.asarray(classify(variables, swapped)) - logits).max()
  assert (changed < 1e-5) == (kind == "nfn")


def test_flat_mlp_is_not_invariant_and_augmentation_permutes_consistently():
  params = _example_inr()
  net, spec = inr_classification.make_classifier("mlp", params, classes=4, mlp_width=8)
  variables = net.init(jax.random.PRNGKey(0), params)
  permuted = inr_classification.random_permutation(jax.random.PRNGKey(5), spec, params)
  # The training step applies it under jit and vmap: the same permutation comes out.
  batched = jax.jit(jax.vmap(lambda k, x: inr_classification.random_permutation(k, spec, x)))(
      jax.random.PRNGKey(5)[None], jax.tree.map(lambda w: w[None], params))
  for x, y in zip(jax.tree.leaves(batched), jax.tree.leaves(permuted)):
    np.testing.assert_array_equal(x[0], y)
  difference = net.apply(variables, permuted) - net.apply(variables, params)
  assert np.abs(np.asarray(difference)).max() > 1e-4
  # The random permutation is a symmetry: the SIREN computes the same function.
  coordinates = inr.pixel_coordinates(3, 3)
  model = inr.Siren((6, 5))
  np.testing.assert_allclose(model.apply({"params": permuted}, coordinates),
                             model.apply({"params": params}, coordinates), rtol=1e-5, atol=1e-6)
  # The kernel's rows and columns moved with the biases of the neurons they connect.
  kernel = np.asarray(params["layers_1"]["kernel"])
  moved = np.asarray(permuted["layers_1"]["kernel"])
  perm_in = [int(np.argmin(np.abs(np.asarray(params["layers_0"]["bias"]) - b)))
             for b in np.asarray(permuted["layers_0"]["bias"])]
  perm_out = [int(np.argmin(np.abs(np.asarray(params["layers_1"]["bias"]) - b)))
              for b in np.asarray(permuted["layers_1"]["bias"])]
  np.testing.assert_array_equal(moved, kernel[np.ix_(perm_in, perm_out)])


def test_standardize_uses_training_rows_only():
  weights = {"w": np.concatenate([np.full((3, 2), 1.0), np.full((3, 2), 3.0), [[100.0, 100.0]]])}
  out = inr_classification.standardize(weights, np.arange(6))
  assert out["w"][:6].mean() == pytest.approx(0.0, abs=1e-6)
  assert out["w"][:6].std() == pytest.approx(1.0, abs=1e-5)
  assert out["w"][6, 0] == pytest.approx((100.0 - 2.0) / 1.0, rel=1e-5)


@pytest.mark.slow
def test_classifier_learns_a_separable_inr_problem():
  # Labels that are a function of the output bias (brightness) are learnable by every classifier.
  base = _example_inr()
  keys = jax.random.split(jax.random.PRNGKey(7), 160)
  weights = jax.vmap(lambda k: jax.tree.map(
      lambda w: w + 0.3 * jax.random.normal(jax.random.fold_in(k, w.size), w.shape), base))(keys)
  labels = (np.asarray(weights["layers_2"]["bias"][:, 0]) > float(base["layers_2"]["bias"][0]))
  split = np.repeat([0, 1, 2], [100, 30, 30])
  weights = inr_classification.standardize(weights, np.flatnonzero(split == 0))
  result = inr_classification.fit_classifier("unf", weights, labels.astype(np.int32), split,
                                             epochs=8, batch_size=10, learning_rate=3e-3,
                                             classes=2, channels=4, mlp_width=16)
  assert result["test_accuracy"] > 0.8
  assert 1 <= result["best_epoch"] <= 8 and len(result["history"]) == 8
