"""The weight-space specs of the UNF paper's experiments, as a task option (``spec="paper"``).

The parameter counts of the UNF paper's Table 3 (Zhou et al. 2024) come from
the spec functions of the authors' released code (learned_optimization,
``research/univ_nfn/learned_opt/learned_opts.py``: ``make_hk_perm_spec``,
``make_hk_cnn_perm_spec``, ``make_hk_irnn_perm_spec``,
``make_hk_transformer_perm_spec``). The CNN and Transformer ones are **not**
symmetries of the networks: an update network built on them is equivariant to
permutations that change the function, and cannot tell apart weights that
behave differently. They are offered to reproduce the paper; the tasks'
default, ``spec="true"``, is the true permutation symmetry.

One builder per architecture, written for this package's flax parameter
layouts; each docstring says how it departs from the true symmetry. Axis names
are strings; the authors' integer names are given in the docstrings.

Example:

  >>> import jax
  >>> from unf_lopt import tasks
  >>> task = tasks.get_task("tiny_cnn", spec="paper")
  >>> task.spec_kind
  'paper'
  >>> task.spec(jax.eval_shape(task.init, jax.random.PRNGKey(0)))["Conv_0"]["kernel"]
  ('c0', 'Conv_0.w', 'c0', 'c1')
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

import unf_lopt as U
from unf_lopt.spec import SpecError

SPEC_KINDS = ("true", "paper")
"""Values of the tasks' ``spec`` option: the true symmetry (default) or the authors' spec."""

PyTree = Any


def check_spec_kind(spec: str, task_name: str) -> str:
  """``spec`` if it is one of `SPEC_KINDS`; else a ValueError naming the allowed values."""
  if not isinstance(spec, str) or spec not in SPEC_KINDS:
    raise ValueError(
        f"{task_name}: spec={spec!r} is not one of {SPEC_KINDS}: 'true' (default) is the "
        "permutation symmetry of the network, 'paper' the UNF authors' spec, which reproduces "
        "the paper's parameter counts but is not a symmetry for the CNN and the Transformer")
  return spec


def mlp_paper_spec(params: Mapping[str, Any]) -> dict[str, dict[str, tuple]]:
  """The authors' MLP spec (``make_hk_perm_spec``): layer i's kernel ``(i, i + 1)``.

  No departure from the default spec (`unf_lopt.mlp_spec`): the hidden neurons
  are the true symmetry, and both specs also name the input pixels and the
  classes, which index the data (the task's ``io_axes``). Table 3: UNF 3,783.
  """
  return U.mlp_spec(params)


def cnn_paper_spec(params: Mapping[str, Any]) -> dict[str, dict[str, tuple]]:
  """The authors' CNN spec (``make_hk_cnn_perm_spec``) on flax ``Conv_i``/``Dense_0`` params.

  Kernel i ``[kh, kw, c_i, c_{i+1}]`` gets ``(tap_h_i, tap_w_i, c_i, c_{i+1})``;
  the head ``Dense_0`` gets ``(c_n, classes)``. Departures from the true
  symmetry (where filter taps are fixed, `unf_lopt.conv_spec`'s default):

  * every filter-tap axis is permuted, each by its own permutation
    (``Conv_i.h``, ``Conv_i.w``); permuting taps changes the convolution;
  * the first kernel's height axis shares the name ``c0`` with the RGB input
    axis. The authors name kernel i's height axis ``-i``, which for ``i = 0``
    is ``0``, the input's name; so one permutation acts on both, and on the
    diagonal of the first kernel. It only runs because ``kh == c_in == 3``.

  With a UNF[1] head this gives 144 basis terms and Table 3's 7,369 for the
  paper's CNN (separate tap names: 5,513; taps shared across layers: 5,897).

  Raises:
    SpecError: when the first kernel's height differs from the number of input
      channels, so the authors' accidental name sharing cannot apply.
  """
  convs = sorted((key for key in params if key.startswith("Conv_")),
                 key=lambda key: int(key.split("_")[1]))
  if not convs or set(params) != {*convs, "Dense_0"}:
    raise SpecError(f"cnn_paper_spec: expected Conv_0..Conv_n and Dense_0, got {sorted(params)}")
  kernel_height, _, in_channels, _ = np.shape(params[convs[0]]["kernel"])
  if kernel_height != in_channels:
    raise SpecError(
        f"cnn_paper_spec: the authors' spec names the first kernel's height axis like the input "
        f"channels, so both must have one size; '{convs[0]}/kernel' has height {kernel_height} "
        f"and {in_channels} input channels")
  channels = [f"c{i}" for i in range(len(convs) + 1)]
  spec = {}
  for i, layer in enumerate(convs):
    tap_h = channels[0] if i == 0 else f"{layer}.h"  # the authors' -0 == 0
    spec[layer] = U.conv_spec(channels[i], channels[i + 1], spatial=(tap_h, f"{layer}.w"))
  spec["Dense_0"] = U.dense_spec(channels[-1], "classes")
  return spec


def rnn_paper_spec(params: Mapping[str, Any]) -> dict[str, Any]:
  """The authors' RNN spec (``make_hk_irnn_perm_spec``); it is the true symmetry.

  For `unf_lopt.tasks.models.RNNLM` params: the vocabulary axis (``-1``) is
  shared by the embedding rows and the head's outputs, the embedding features
  (``0``) and the hidden units (``1``) are permuted, the recurrent kernel has
  the hidden name on both axes, and the initial state ``[1, hidden]`` gets a
  name of its own on its size-1 axis (``-2``). Table 3: UNF 8,043.
  """
  expected = {"embed", "rnn", "head"}
  if set(params) != expected:
    raise SpecError(f"rnn_paper_spec: expected {sorted(expected)}, got {sorted(params)}")
  return {"embed": U.embed_spec("vocab", "embed"),
          "rnn": {"input": U.dense_spec("embed", "hidden"),
                  "cell": {"recurrent": U.dense_spec("hidden", "hidden")},
                  "initial_state": ("state", "hidden")},
          "head": U.dense_spec("hidden", "vocab")}


def transformer_paper_spec(params: Mapping[str, Any]) -> dict[str, Any]:
  """The authors' Transformer spec (``make_hk_transformer_perm_spec``).

  For `unf_lopt.tasks.models.TransformerLM` params with ``flat_heads=True``
  (query/key/value kernels ``[d_model, heads * key_size]``, haiku's layout).
  Names: ``stream{b}`` for the residual stream entering block b's MLP output
  (the authors' 0, 2, 4), ``hidden{b}`` for block b's flattened q/k/v axis and
  MLP hidden axis (1, 3), ``vocab_in`` / ``vocab_out`` for the embedding rows
  and the head's outputs (-1, -2). Departures from the true symmetry (`unf_lopt.infer_spec`):

  * the residual stream gets a new name after each block's MLP output, although
    the residual additions tie every stream tensor to one permutation;
  * within a block one permutation acts on the flattened q/k/v axis and on the
    MLP hidden axis; the true symmetry permutes heads and the dimensions within
    heads (query/key and value apart), and the MLP hidden units independently;
    a permutation of the flat axis that mixes heads changes the attention;
  * the vocabulary is untied: the embedding rows and the head's outputs are
    permuted independently (the data relabelling ties them).

  With a UNF[1] head: 1,918 basis terms and Table 3's 64,168 (tied vocabulary:
  64,296; one stream name: 80,616; the true symmetry: 81,320).

  Raises:
    SpecError: for the default attention layout (heads on their own axis) or
      when ``heads * key_size != mlp_dim``, where one name cannot cover both axes.
  """
  blocks = sorted((key for key in params if key.startswith("Block_")),
                  key=lambda key: int(key.split("_")[1]))
  expected = {"Embed_0", *blocks, "LayerNorm_0", "Dense_0"}
  if not blocks or set(params) != expected:
    raise SpecError(f"transformer_paper_spec: expected {sorted(expected)}, got {sorted(params)}")
  stream = [f"stream{b}" for b in range(len(blocks) + 1)]
  spec = {"Embed_0": U.embed_spec("vocab_in", stream[0])}
  for b, block in enumerate(blocks):
    if "FlatHeadsAttention_0" not in params[block]:
      raise SpecError(
          f"transformer_paper_spec: '{block}' keeps heads on their own axis "
          f"({sorted(params[block])}); the authors' spec names the flattened q/k/v axis, so "
          "build the model with TransformerLM(flat_heads=True), as "
          "transformer_lm1b(spec='paper') does")
    qkv_width = np.shape(params[block]["FlatHeadsAttention_0"]["query"]["kernel"])[1]
    mlp_width = np.shape(params[block]["Dense_0"]["kernel"])[1]
    if qkv_width != mlp_width:
      raise SpecError(
          f"transformer_paper_spec: the authors' spec gives '{block}''s q/k/v axis "
          f"({qkv_width} wide) and its MLP hidden axis ({mlp_width} wide) one name; they "
          "need one size (heads * key_size == mlp_dim)")
    hidden = f"hidden{b}"
    spec[block] = {
        "LayerNorm_0": U.layer_norm_spec(stream[b]),
        "FlatHeadsAttention_0": {"query": U.dense_spec(stream[b], hidden),
                                 "key": U.dense_spec(stream[b], hidden),
                                 "value": U.dense_spec(stream[b], hidden),
                                 "out": U.dense_spec(hidden, stream[b])},
        "LayerNorm_1": U.layer_norm_spec(stream[b]),
        "Dense_0": U.dense_spec(stream[b], hidden),
        "Dense_1": U.dense_spec(hidden, stream[b + 1])}
  spec["LayerNorm_0"] = U.layer_norm_spec(stream[-1])
  spec["Dense_0"] = U.dense_spec(stream[-1], "vocab_out")
  return spec
