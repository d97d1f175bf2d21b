"""unf-lopt: learned optimizers built from universal neural functionals."""

from unf_lopt.basis import bell_number, compile_plan, num_basis_terms, valid_partitions
from unf_lopt.layers import (DeepSetLinear, InvariantPool, NFNLinear, UNFLinear,
                             invariant_pool, pointwise)
from unf_lopt.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from unf_lopt.optax_adapter import as_optax
from unf_lopt.optimizer import NominalLOpt
from unf_lopt.pretrained import available_pretrained, pretrained, pretrained_info
from unf_lopt.spec_inference import infer_spec
from unf_lopt.spec_verify import verify_spec
from unf_lopt.spec_matching import SpecMatch, match_spec
from unf_lopt.update_nets import UpdateNet
from unf_lopt.spec import (FIXED, SpecError, attention_spec, conv_spec, dense_spec,
                           embed_spec, layer_norm_spec, mlp_spec, recurrent_cell_spec,
                           validate_spec)

__all__ = [
    "CheckpointError",
    "FIXED",
    "infer_spec",
    "DeepSetLinear",
    "InvariantPool",
    "NFNLinear",
    "NominalLOpt",
    "SpecError",
    "SpecMatch",
    "UNFLinear",
    "UpdateNet",
    "as_optax",
    "attention_spec",
    "available_pretrained",
    "bell_number",
    "compile_plan",
    "conv_spec",
    "dense_spec",
    "embed_spec",
    "invariant_pool",
    "layer_norm_spec",
    "load_checkpoint",
    "match_spec",
    "mlp_spec",
    "num_basis_terms",
    "pointwise",
    "pretrained",
    "pretrained_info",
    "recurrent_cell_spec",
    "save_checkpoint",
    "valid_partitions",
    "validate_spec",
    "verify_spec",
]

__version__ = "0.1.0"
