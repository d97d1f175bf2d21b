"""Dense brute-force reference of the UNF layer, independent of the einsum plan.

Every basis term is materialised as a dense 0/1 matrix over all (output index,
input index) pairs by checking, index tuple by index tuple, that axes in one
block carry one index; pooled blocks are averaged.
"""

import itertools
import math

import numpy as np


def term_matrix(out_shape, in_shape, term):
  """Dense matrix [prod(out_shape), prod(in_shape)] of one basis term."""
  labels = (*term.out_labels, *term.in_labels)
  sizes = (*out_shape, *in_shape)
  pooled = set(term.in_labels) - set(term.out_labels)
  pool_count = math.prod(sizes[labels.index(label)] for label in pooled)
  matrix = np.zeros((math.prod(out_shape), math.prod(in_shape)))
  for o_flat, o_idx in enumerate(itertools.product(*map(range, out_shape))):
    for i_flat, i_idx in enumerate(itertools.product(*map(range, in_shape))):
      index = (*o_idx, *i_idx)
      value_of = {}
      if all(value_of.setdefault(label, v) == v for label, v in zip(labels, index)):
        matrix[o_flat, i_flat] = 1.0 / pool_count
  return matrix


def dense_unf(plan, shapes, leaves, kernels, biases):
  """Output leaves of a bias/kernel-parameterised UNF layer, by dense matrices.

  Args:
    plan: the layer's ``LayerPlan`` (used only for the term list and row order).
    shapes: per tensor, the spatial shape (no channels).
    leaves: per tensor, ``[*shape, C_in]`` inputs.
    kernels: per output tensor, ``[num_terms * C_in, C_out]``.
    biases: per output tensor, ``[C_out]``.
  """
  outputs = []
  for tensor_plan, out_shape, kernel, bias in zip(plan.tensors, shapes, kernels, biases):
    c_in = leaves[0].shape[-1]
    total = np.zeros((math.prod(out_shape), kernel.shape[1]))
    for row, (in_index, term) in enumerate(tensor_plan.terms):
      x = np.asarray(leaves[in_index], np.float64).reshape(-1, c_in)
      coefficients = np.asarray(kernel[row * c_in:(row + 1) * c_in], np.float64)
      total += term_matrix(out_shape, shapes[in_index], term) @ x @ coefficients
    outputs.append((total + np.asarray(bias)).reshape(*out_shape, -1))
  return outputs
