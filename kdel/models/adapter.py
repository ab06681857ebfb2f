"""One adapter for GPT-2, Llama and GPT-NeoX: module-path templates per architecture (DESIGN §4).

Everything that hooks or edits a model asks the adapter for modules and weights, never a hard-coded path.
Weight orientation: GPT-2's `Conv1D` stores W as (in, out); `nn.Linear` as (out, in). The adapter exposes
the MLP output matrix always as (out, in) = (d_model, d_mlp), the convention of ROME's algebra
(v = W k), and adds updates in that convention whatever the storage.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from kdel.errors import UserError


@dataclass(frozen=True)
class ArchSpec:
    """Module-path templates of one architecture family ('{}' is the layer index)."""

    family: str
    layer: str  # a transformer block; its output is the residual stream after the block
    attn: str  # attention sub-module; output[0] is what is added to the residual stream
    mlp: str  # MLP sub-module; output is what is added to the residual stream
    mlp_out: str  # the MLP's output projection (input = the key k, output = the value v)
    embed: str  # token embedding
    final_norm: str
    unembed: str
    pos_embed: str | None = None  # learned absolute position embedding, if any
    mlp_out_transposed: bool = False  # True for GPT-2 Conv1D (weight stored as (in, out))
    n_layers_attr: str = "num_hidden_layers"


ARCHITECTURES: dict[str, ArchSpec] = {
    "gpt2": ArchSpec(
        family="gpt2",
        layer="transformer.h.{}",
        attn="transformer.h.{}.attn",
        mlp="transformer.h.{}.mlp",
        mlp_out="transformer.h.{}.mlp.c_proj",
        embed="transformer.wte",
        final_norm="transformer.ln_f",
        unembed="lm_head",
        pos_embed="transformer.wpe",
        mlp_out_transposed=True,
        n_layers_attr="n_layer",
    ),
    "llama": ArchSpec(
        family="llama",
        layer="model.layers.{}",
        attn="model.layers.{}.self_attn",
        mlp="model.layers.{}.mlp",
        mlp_out="model.layers.{}.mlp.down_proj",
        embed="model.embed_tokens",
        final_norm="model.norm",
        unembed="lm_head",
    ),
    "gpt_neox": ArchSpec(
        family="gpt_neox",
        layer="gpt_neox.layers.{}",
        attn="gpt_neox.layers.{}.attention",
        mlp="gpt_neox.layers.{}.mlp",
        mlp_out="gpt_neox.layers.{}.mlp.dense_4h_to_h",
        embed="gpt_neox.embed_in",
        final_norm="gpt_neox.final_layer_norm",
        unembed="lm_head",  # `embed_out` before transformers 5: the adapter falls back to get_output_embeddings()
    ),
}
# Families whose module layout matches one above.
_ALIASES = {"mistral": "llama", "qwen2": "llama", "gemma": "llama", "olmo": "llama", "pythia": "gpt_neox"}


def arch_for(model: nn.Module) -> ArchSpec:
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    key = _ALIASES.get(model_type, model_type)
    if key not in ARCHITECTURES:
        raise UserError(
            f"unsupported model type {model_type!r}: kdel supports {', '.join(sorted(ARCHITECTURES))} "
            f"(and {', '.join(sorted(_ALIASES))})"
        )
    return ARCHITECTURES[key]


def first_tensor(output):
    """The hidden-state tensor of a module output (tensor, or tuple whose first item is it)."""
    return output[0] if isinstance(output, tuple) else output


def with_first_tensor(output, tensor):
    """`output` with its hidden-state tensor replaced by `tensor` (same container type)."""
    if isinstance(output, tuple):
        return (tensor,) + tuple(output[1:])
    return tensor


class ModelAdapter:
    """Architecture-independent access to a causal LM's layers, MLP matrices and (un)embeddings."""

    def __init__(self, model: nn.Module, tokenizer=None):
        self.model = model
        self.tokenizer = tokenizer
        self.arch = arch_for(model)
        cfg = model.config
        self.n_layers: int = int(getattr(cfg, self.arch.n_layers_attr, None) or cfg.num_hidden_layers)
        self.d_model: int = int(getattr(cfg, "hidden_size", None) or cfg.n_embd)

    # -- modules -----------------------------------------------------------------------------
    def module(self, path: str) -> nn.Module:
        return self.model.get_submodule(path)

    def _check_layer(self, layer: int) -> int:
        if not 0 <= layer < self.n_layers:
            raise UserError(f"layer {layer} is out of range: this model has layers 0..{self.n_layers - 1}")
        return layer

    def layer(self, i: int) -> nn.Module:
        return self.module(self.arch.layer.format(self._check_layer(i)))

    def attn(self, i: int) -> nn.Module:
        return self.module(self.arch.attn.format(self._check_layer(i)))

    def mlp(self, i: int) -> nn.Module:
        return self.module(self.arch.mlp.format(self._check_layer(i)))

    def mlp_out(self, i: int) -> nn.Module:
        return self.module(self.arch.mlp_out.format(self._check_layer(i)))

    def component(self, kind: str, i: int) -> nn.Module:
        """'resid' (block output), 'mlp' (MLP output) or 'attn' (attention output) of layer i."""
        if kind == "resid":
            return self.layer(i)
        if kind == "mlp":
            return self.mlp(i)
        if kind == "attn":
            return self.attn(i)
        raise UserError(f"unknown component {kind!r}: use resid, mlp or attn")

    @property
    def embed(self) -> nn.Module:
        return self.module(self.arch.embed)

    @property
    def final_norm(self) -> nn.Module:
        return self.module(self.arch.final_norm)

    @property
    def unembed(self) -> nn.Module:
        try:
            return self.module(self.arch.unembed)
        except AttributeError:
            return self.model.get_output_embeddings()

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # -- the MLP output matrix in (out, in) convention -------------------------------------------
    def mlp_out_param_name(self, i: int) -> str:
        return self.arch.mlp_out.format(self._check_layer(i)) + ".weight"

    def mlp_out_weight(self, i: int) -> torch.Tensor:
        """W of layer i as (d_model, d_mlp): v = W k. A view for Linear, a transposed view for Conv1D."""
        w = self.mlp_out(i).weight
        return w.T if self.arch.mlp_out_transposed else w

    def d_mlp(self, i: int = 0) -> int:
        return int(self.mlp_out_weight(i).shape[1])

    @torch.no_grad()
    def add_to_mlp_out(self, i: int, delta: torch.Tensor) -> None:
        """W_i += delta, with delta given as (d_model, d_mlp) whatever the storage."""
        w = self.mlp_out(i).weight
        d = delta.T if self.arch.mlp_out_transposed else delta
        w.add_(d.to(device=w.device, dtype=w.dtype))

    def embedding_matrix(self) -> torch.Tensor:
        return self.embed.weight

    def unembedding_matrix(self) -> torch.Tensor:
        """(vocab, d_model)."""
        return self.unembed.weight

    def parameter(self, name: str) -> nn.Parameter:
        return self.model.get_parameter(name)
