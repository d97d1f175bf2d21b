"""Matching a weight space onto the structure an optimizer was trained on.

A UNF or NFN update network keys its meta-parameters by the tensor paths of
the spec it was trained on (the *template*), but what it computes depends only
on the template's *structure*: which tensors there are, their ranks, which of
their axes share a permutation, and the sizes of their fixed axes (those fold
into channels). Widths of permuted axes and the names of tensors and axes are
free. :func:`match_spec` finds a correspondence between a user's weight space
and a template:

* a bijection from the user's tensors to the template's tensors, axis
  position to axis position (ranks agree);
* a bijection from the user's axis names to the template's, so that axes that
  share a name in one share the image name in the other;
* fixed axes go to fixed axes of equal size (when the template's sizes are
  known); permuted axes may have other widths. A user's fixed axis of size 1
  may go to any axis (permuting one index changes nothing), so a regression
  head with one output matches a template whose outputs are permuted.

Candidates are pruned by colour refinement (1-dimensional Weisfeiler-Lehman on
the bipartite tensor/name incidence graph, axis positions as edge labels) and
the correspondence is found by backtracking. Where the structure has
symmetries of its own and several matches are valid, each tensor prefers the
template tensor with its own path, then one with its leaf name (``kernel``,
``scale``, ...), then the user's flatten order (the lexicographically first
assignment): ``layers_0`` goes to ``Dense_0`` and ``layers_2`` to ``Dense_1``.

Without a user spec the axis names are not known, and the match assigns the
template's names to the user's axes from the shapes alone (each template name
must get one consistent size). That is a *structural guess*: the model may
not have the symmetry the template's names claim. For an optimizer it is
harmless (the update network is still a valid function of the weights and
gradients; being equivariant to a group the model may not have only restricts
it), and passing the user's ``spec=`` (or an ``apply_fn=`` to infer it from)
makes the match exact.

Example:
  >>> import numpy as np
  >>> template = {"Dense_0": {"kernel": ("n0", "n1"), "bias": ("n1",)},
  ...             "Dense_1": {"kernel": ("n1", "n2"), "bias": ("n2",)}}
  >>> params = {"layers_0": {"kernel": np.zeros((784, 128)), "bias": np.zeros(128)},
  ...           "layers_2": {"kernel": np.zeros((128, 10)), "bias": np.zeros(10)}}
  >>> match = match_spec(template, params)
  >>> match.tensor_map["layers_2/kernel"], match.exact
  ('Dense_1/kernel', False)
  >>> match.to_template(params)["Dense_0"]["kernel"].shape
  (784, 128)
  >>> match.from_template(match.to_template(params))["layers_2"]["bias"].shape
  (10,)
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Hashable
from typing import Any

import jax
import numpy as np

from unf_lopt.shipped import shipped_names
from unf_lopt.spec import FIXED, SpecError, is_axes, path_to_str, tensor_infos

PyTree = Any
# Backtracking steps after which the search gives up (colour refinement leaves
# nearly every candidate forced, so real weight spaces need about one per tensor).
SEARCH_BUDGET = 200_000


@dataclasses.dataclass(frozen=True)
class _Tensor:
  path: str
  axes: tuple  # axis names, FIXED for a fixed axis; None entries in a guess
  shape: tuple[int, ...] | None  # None when the sizes are not known


@dataclasses.dataclass(frozen=True)
class SpecMatch:
  """A correspondence between a user's weight space and a template.

  Attributes:
    template_spec: the template, the spec to run the update network with on
      ``to_template(...)`` trees.
    user_spec: the user's spec (given, or for a guess the template's names on
      the user's tensors); it validates against the user's params.
    tensor_map: user tensor path -> template tensor path.
    name_map: user axis name -> template axis name.
    exact: False when the user gave no spec and the names were guessed from
      the shapes (see the module docstring).
  """

  template_spec: PyTree
  user_spec: PyTree
  tensor_map: dict[str, str]
  name_map: dict[Hashable, Hashable]
  exact: bool
  _user_treedef: Any = dataclasses.field(repr=False)
  _template_treedef: Any = dataclasses.field(repr=False)
  _template_of_user: tuple[int, ...] = dataclasses.field(repr=False)

  @property
  def is_identity(self) -> bool:
    """True when every tensor keeps its path (re-keying changes nothing)."""
    return all(user == template for user, template in self.tensor_map.items())

  def to_template(self, tree: PyTree) -> PyTree:
    """A pytree shaped like the user's params, re-keyed into the template's structure.

    Leaves move whole (they may carry trailing axes, e.g. feature channels).
    """
    leaves = self._user_treedef.flatten_up_to(tree)
    moved = [None] * len(leaves)
    for user_index, template_index in enumerate(self._template_of_user):
      moved[template_index] = leaves[user_index]
    return self._template_treedef.unflatten(moved)

  def from_template(self, tree: PyTree) -> PyTree:
    """Inverse of :meth:`to_template`: a template-shaped pytree back in the user's structure."""
    leaves = self._template_treedef.flatten_up_to(tree)
    return self._user_treedef.unflatten([leaves[t] for t in self._template_of_user])


def _template_tensors(template: PyTree, template_shapes: PyTree | None
                      ) -> tuple[list[_Tensor], Any]:
  with_path, treedef = jax.tree_util.tree_flatten_with_path(template, is_leaf=is_axes)
  tensors = []
  for path, axes in with_path:
    if not is_axes(axes):
      raise SpecError(f"template spec leaf at '{path_to_str(path)}' is {axes!r}; expected a "
                      "tuple of axis names")
    tensors.append(_Tensor(path_to_str(path), tuple(axes), None))
  if template_shapes is not None:
    infos, _ = tensor_infos(template, template_shapes)
    shapes = {info.path: info.shape for info in infos}
    tensors = [dataclasses.replace(t, shape=shapes[t.path]) for t in tensors]
  return tensors, treedef


def _user_tensors(params: PyTree, spec: PyTree | None) -> tuple[list[_Tensor], Any]:
  with_path, treedef = jax.tree_util.tree_flatten_with_path(params)
  shapes = {path_to_str(p): tuple(int(d) for d in np.shape(leaf)) for p, leaf in with_path}
  if spec is None:
    return [_Tensor(path, (None,) * len(shape), shape) for path, shape in shapes.items()], treedef
  infos, treedef = tensor_infos(spec, params)
  return [_Tensor(info.path, tuple(info.axes), info.shape) for info in infos], treedef


# ---------------------------------------------------------------------------
# Colour refinement over both weight spaces at once, so colours compare.


def _initial_tensor_key(tensor: _Tensor, fixed_sizes_known: bool) -> tuple:
  first_position = {}
  pattern = []
  sizes = tensor.shape if tensor.shape is not None else (None,) * len(tensor.axes)
  for position, (name, size) in enumerate(zip(tensor.axes, sizes)):
    if name is FIXED:
      pattern.append(("fixed", size if fixed_sizes_known else None))
    else:  # positions that share one name share one label
      pattern.append(("named", first_position.setdefault(name, position)))
  return ("tensor", len(tensor.axes), tuple(pattern))


def _refine(sides: list[list[_Tensor]], fixed_sizes_known: bool
            ) -> tuple[list[list[int]], list[dict[Hashable, int]]]:
  """Stable tensor and name colours of every side (one shared palette)."""
  palette: dict[Any, int] = {}
  tensor_colours = [[palette.setdefault(_initial_tensor_key(t, fixed_sizes_known), len(palette))
                     for t in tensors] for tensors in sides]
  name_colours = [{name: palette.setdefault(("name",), len(palette))
                   for t in tensors for name in t.axes if name is not FIXED} for tensors in sides]
  count = len(palette)
  while True:
    palette = {}
    new_tensor_colours, new_name_colours = [], []
    for tensors, t_colours, n_colours in zip(sides, tensor_colours, name_colours):
      incidences: dict[Hashable, list] = {name: [] for name in n_colours}
      for t, colour in zip(tensors, t_colours):
        for position, name in enumerate(t.axes):
          if name is not FIXED:
            incidences[name].append((position, colour))
      new_tensor_colours.append([
          palette.setdefault(("tensor", colour, tuple(
              -1 if name is FIXED else n_colours[name] for name in t.axes)), len(palette))
          for t, colour in zip(tensors, t_colours)])
      new_name_colours.append({
          name: palette.setdefault(("name", n_colours[name], tuple(sorted(incidences[name]))),
                                   len(palette))
          for name in n_colours})
    tensor_colours, name_colours = new_tensor_colours, new_name_colours
    if len(palette) == count:
      return tensor_colours, name_colours
    count = len(palette)


# ---------------------------------------------------------------------------
# Backtracking in the user's flatten order: the first match found keeps it best.


def _preferred(user: list[_Tensor], template: list[_Tensor], candidates: list[list[int]]
               ) -> list[list[int]]:
  """Candidates with the user tensor's own path first, then its leaf name, then in order."""
  leaf = lambda path: path.rsplit("/", 1)[-1]
  return [sorted(options, key=lambda j, u=u: (template[j].path != u.path,
                                                leaf(template[j].path) != leaf(u.path), j))
          for u, options in zip(user, candidates)]


def _search(user: list[_Tensor], template: list[_Tensor], candidates: list[list[int]],
            admissible) -> tuple[list[int], dict] | None:
  """Lexicographically first assignment user tensor -> template tensor, or None.

  ``admissible(user_tensor, template_tensor, bindings)`` returns the new
  bindings an assignment adds (a dict), or None if it conflicts.
  """
  candidates = _preferred(user, template, candidates)
  assignment: list[int] = []
  added: list[dict] = []
  bindings: dict = {}
  used: set[int] = set()
  next_candidate = [0] * (len(user) + 1)
  steps = 0
  while len(assignment) < len(user):
    steps += 1
    if steps > SEARCH_BUDGET:
      raise SpecError(f"matching the weight space onto the trained structure gave up after "
                      f"{SEARCH_BUDGET} steps; pass spec=... so the names are known")
    index = len(assignment)
    options = candidates[index]
    while next_candidate[index] < len(options):
      t = options[next_candidate[index]]
      next_candidate[index] += 1
      if t in used:
        continue
      new = admissible(user[index], template[t], bindings)
      if new is not None:
        bindings.update(new)
        used.add(t)
        assignment.append(t)
        added.append(new)
        next_candidate[index + 1] = 0
        break
    else:  # no candidate left here: undo the previous choice
      if not assignment:
        return None
      used.discard(assignment.pop())
      for key in added.pop():
        del bindings[key]
  return assignment, bindings


def _exact_admissible(user_names: dict, template_names: dict, sizes_known: bool):
  def admissible(u: _Tensor, t: _Tensor, bindings: dict) -> dict | None:
    new = {}
    for position, (a, b) in enumerate(zip(u.axes, t.axes)):
      if (a is FIXED) != (b is FIXED):
        return None
      if a is FIXED:
        if sizes_known and u.shape[position] != t.shape[position]:
          return None
        continue
      forward, backward = ("to", a), ("from", b)
      for key, value in ((forward, b), (backward, a)):
        bound = bindings.get(key, new.get(key))
        if bound is not None and bound != value:
          return None
        new[key] = value
      if user_names[a] != template_names[b]:
        return None
    return {k: v for k, v in new.items() if k not in bindings}
  return admissible


def _size_one_admissible(sizes_known: bool):
  """Like the exact rule, where the user's fixed axes of size 1 may go to any axis.

  Permuting a single index is the identity, so such an axis may as well carry
  whichever name the template has there; every axis on one template name must
  then have one size.
  """
  def admissible(u: _Tensor, t: _Tensor, bindings: dict) -> dict | None:
    new = {}

    def bind(key, value):
      bound = bindings.get(key, new.get(key))
      if bound is not None and bound != value:
        return False
      new[key] = value
      return True

    for position, (a, b) in enumerate(zip(u.axes, t.axes)):
      size = u.shape[position]
      if a is FIXED and (size != 1 or b is FIXED):
        if b is not FIXED or (sizes_known and size != t.shape[position]):
          return None
        continue
      if b is FIXED:
        return None
      if not bind(("size", b), size):
        return None
      if a is not FIXED and not (bind(("to", a), b) and bind(("from", b), a)):
        return None
    return {k: v for k, v in new.items() if k not in bindings}
  return admissible


def _guess_admissible(sizes_known: bool):
  def admissible(u: _Tensor, t: _Tensor, bindings: dict) -> dict | None:
    new = {}
    for position, (size, b) in enumerate(zip(u.shape, t.axes)):
      if b is FIXED:
        if sizes_known and size != t.shape[position]:
          return None
        continue
      bound = bindings.get(("size", b), new.get(("size", b)))
      if bound is not None and bound != size:
        return None
      new[("size", b)] = size
    return {k: v for k, v in new.items() if k not in bindings}
  return admissible


# ---------------------------------------------------------------------------
# Errors that say what differs.


def _describe(tensors: list[_Tensor], with_names: bool) -> str:
  def axis(name, size):
    if name is FIXED and with_names:
      return "fixed" if size is None else f"fixed {size}"
    return str(name) if with_names else str(size)
  parts = []
  for t in tensors:
    sizes = t.shape if t.shape is not None else (None,) * len(t.axes)
    parts.append(f"{t.path}({', '.join(axis(n, s) for n, s in zip(t.axes, sizes))})")
  return f"{len(tensors)} tensor{'s' * (len(tensors) != 1)}: {', '.join(parts)}"


def _fixed_positions(tensor: _Tensor) -> tuple[int, ...]:
  return tuple(p for p, name in enumerate(tensor.axes) if name is FIXED)


def _difference(user: list[_Tensor], template: list[_Tensor], exact: bool,
                sizes_known: bool) -> str:
  """What differs between two weight spaces that do not match, in words."""
  if len(user) != len(template):
    return f"the numbers of tensors differ ({len(user)} vs {len(template)})"
  ranks_user = Counter(len(t.axes) for t in user)
  ranks_template = Counter(len(t.axes) for t in template)
  if ranks_user != ranks_template:
    show = lambda c: ", ".join(f"{n} of rank {r}" for r, n in sorted(c.items()))
    return f"the tensor ranks differ (yours: {show(ranks_user)}; trained: {show(ranks_template)})"
  if exact and Counter(map(_fixed_positions, user)) != Counter(map(_fixed_positions, template)):
    return "the fixed axes differ (an axis FIXED in one spec is permuted in the other)"
  if sizes_known:
    fixed_sizes = lambda t: (_fixed_positions(t), tuple(t.shape[p] for p in _fixed_positions(t)))
    if exact and Counter(map(fixed_sizes, user)) != Counter(map(fixed_sizes, template)):
      return ("the sizes of fixed axes differ (fixed axes fold into the update network's "
              "channels, so their sizes are part of the structure)")
  if not exact:
    return ("no assignment of the trained axis names to your axes gives every name one size"
            + (" and every fixed axis its trained size" if sizes_known else ""))
  return "the axes are shared differently between the tensors (another wiring of the layers)"


def _no_match_error(user: list[_Tensor], template: list[_Tensor], exact: bool,
                    sizes_known: bool) -> SpecError:
  anywhere = [name for name in shipped_names() if name.startswith("deepset_")]
  suggestion = (f" The deepset_* pretrained optimizers ({', '.join(anywhere)}) fit any model."
                if anywhere else " A deepset optimizer fits any model.")
  yours = "your model's spec has" if exact else "your model has"
  return SpecError(
      f"this optimizer was trained on a weight space of another structure: "
      f"{_difference(user, template, exact, sizes_known)}. It was trained on "
      f"{_describe(template, True)}; "
      f"{yours} {_describe(user, exact)}. A UNF or NFN optimizer applies to models with the "
      f"structure it was trained on, up to widths and tensor names.{suggestion}")


# ---------------------------------------------------------------------------


def match_spec(template: PyTree, params: PyTree, spec: PyTree | None = None, *,
               template_shapes: PyTree | None = None) -> SpecMatch:
  """Matches the weight space ``params`` (with ``spec``) onto the spec ``template``.

  Args:
    template: the spec the optimizer was trained on (tensor paths and axis
      names; a checkpoint's stored spec).
    params: the user's parameters, or arrays / ``jax.ShapeDtypeStruct`` of
      their shapes.
    spec: the user's spec of ``params``. Without it the names are guessed
      from the shapes (see the module docstring; the match is then not exact).
    template_shapes: the shapes of the template's tensors (a pytree mirroring
      it); when given, fixed axes must match fixed axes of the same size.
      Checkpoints do not store them.

  Returns:
    The :class:`SpecMatch` that keeps the user's flatten order best.

  Raises:
    SpecError: ``spec`` does not fit ``params``, or no match exists; the
      message shows both structures, says what differs and suggests the
      ``deepset_*`` optimizers, which fit any model.
  """
  template_tensors, template_treedef = _template_tensors(template, template_shapes)
  user_tensors, user_treedef = _user_tensors(params, spec)
  sizes_known = template_shapes is not None
  exact = spec is not None
  found = None
  size_one_fixed = exact and any(name is FIXED and size == 1 for t in user_tensors
                                  for name, size in zip(t.axes, t.shape))
  if len(user_tensors) == len(template_tensors):
    if size_one_fixed:  # colours would tell these axes apart: match by rank instead
      candidates = [[j for j, t in enumerate(template_tensors) if len(t.axes) == len(u.axes)]
                    for u in user_tensors]
      found = _search(user_tensors, template_tensors, candidates,
                      _size_one_admissible(sizes_known))
    elif exact:
      (user_colours, template_colours), (user_names, template_names) = _refine(
          [user_tensors, template_tensors], sizes_known)
      if (Counter(user_colours) == Counter(template_colours)
          and Counter(user_names.values()) == Counter(template_names.values())):
        candidates = [[j for j, c in enumerate(template_colours) if c == colour]
                      for colour in user_colours]
        found = _search(user_tensors, template_tensors, candidates,
                        _exact_admissible(user_names, template_names, sizes_known))
    else:
      candidates = [[j for j, t in enumerate(template_tensors) if len(t.axes) == len(u.axes)]
                    for u in user_tensors]
      found = _search(user_tensors, template_tensors, candidates, _guess_admissible(sizes_known))
  if found is None:
    raise _no_match_error(user_tensors, template_tensors, exact, sizes_known)
  assignment, bindings = found
  if exact:
    name_map = {key[1]: value for key, value in bindings.items() if key[0] == "to"}
    user_spec = spec
  else:
    names = [t.axes for t in template_tensors]
    name_map = {name: name for axes in names for name in axes if name is not FIXED}
    user_spec = user_treedef.unflatten([names[j] for j in assignment])
  tensor_map = {u.path: template_tensors[j].path for u, j in zip(user_tensors, assignment)}
  return SpecMatch(template_spec=template, user_spec=user_spec, tensor_map=tensor_map,
                   name_map=name_map, exact=exact, _user_treedef=user_treedef,
                   _template_treedef=template_treedef, _template_of_user=tuple(assignment))
