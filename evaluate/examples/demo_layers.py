"""A runnable tour of the weight-space layers on a real flax model.

Takes the CNN of the ``cnn_cifar10`` task, infers its weight-space spec (and
prints the spec the task declares next to it), runs a UNF layer over
(weights, gradients) features and checks numerically that permuting the
hidden channels of the CNN permutes the layer's output the same way.

Usage: python -m unf_lopt.evaluate.examples.demo_layers
"""

import jax
import jax.numpy as jnp
import numpy as np

import unf_lopt as U
from unf_lopt import tasks
from unf_lopt.permutations import permute, sample_permutations


def main() -> None:
  task = tasks.get_task("cnn_cifar10")  # only its network: no data is read
  model = task.model
  image_shape = task.dummy_batch()["image"].shape[1:]
  images = jax.random.normal(jax.random.PRNGKey(0), (8, *image_shape))
  labels = jnp.arange(8) % 10
  params = jax.jit(task.init)(jax.random.PRNGKey(1))
  spec = U.infer_spec(params, lambda p, x: model.apply({"params": p}, x), (images,))
  print("inferred spec:")
  is_axes = lambda node: isinstance(node, tuple)
  for path, axes in jax.tree_util.tree_flatten_with_path(spec, is_leaf=is_axes)[0]:
    print(f"  {jax.tree_util.keystr(path):28s} {axes}")
  print(f"the task's declared spec: {task.spec(params)}")

  def loss(p):
    logits = model.apply({"params": p}, images)
    return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(8), labels])

  grads = jax.grad(loss)(params)
  features = jax.tree.map(lambda w, g: jnp.stack([w, g], axis=-1), params, grads)
  layer = U.UNFLinear(1)
  variables = layer.init(jax.random.PRNGKey(2), features, spec)
  print(f"UNFLinear(2 -> 1): {sum(np.size(v) for v in jax.tree.leaves(variables))} coefficients")
  update = jax.jit(lambda f: layer.apply(variables, f, spec))

  perms = sample_permutations(np.random.default_rng(0), spec, params)
  permuted_params = permute(params, spec, perms)
  print(f"loss {loss(params):.6f}, "
        f"loss after permuting hidden channels {loss(permuted_params):.6f}")
  a = update(permute(features, spec, perms, trailing_dims=1))
  b = permute(update(features), spec, perms, trailing_dims=1)
  error = max(float(jnp.max(jnp.abs(x - y)))
              for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
  print(f"equivariance error |f(P x) - P f(x)|_max = {error:.2e}")


if __name__ == "__main__":
  main()
