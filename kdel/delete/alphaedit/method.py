"""AlphaEdit (Fang et al., ICLR 2025): MEMIT whose per-layer update is projected onto the null space of the
preserved keys, so that the outputs of those keys do not move.

Everything but the per-layer solve is MEMIT's (kdel.delete.memit: v* at the window's top layer, keys and
residuals per layer, ascending). For layer l with keys K (d_mlp, n), residuals R (d_model, n) and the
null-space projection P of the corpus keys at l (kdel.delete.alphaedit.projection) and α = l2 · tr(C_l):
    ΔW_l = R Kᵀ P (K Kᵀ P + α I)⁻¹ = [R Kᵀ (P K Kᵀ + α I)⁻¹] P,
computed in the second form so that ΔW k0 = Y (P k0) is exactly as small as P k0 for a preserved key k0.
`preserve: none` gives P = I: the unprojected update R Kᵀ (K Kᵀ + α I)⁻¹ (MEMIT with α I in place of λC).
kdel edits one request at a time and reverts it, so the paper's term for earlier sequential edits
(K_p K_pᵀ) is not kept across requests.
"""

from __future__ import annotations

import torch

from kdel.delete.alphaedit.hparams import AlphaEditHparams
from kdel.delete.alphaedit.projection import preserved_null_space
from kdel.delete.base import EditContext, register_method
from kdel.delete.covariance import KeyStats
from kdel.delete.memit.method import Memit


@register_method
class AlphaEdit(Memit):
    name = "alphaedit"
    hparams_class = AlphaEditHparams

    def projection(self, ctx: EditContext, stats: KeyStats) -> tuple[torch.Tensor, dict]:
        hp = self.hparams
        if hp.preserve == "none":
            return torch.eye(stats.C.shape[0], dtype=torch.float64), {"nullspace_dim": int(stats.C.shape[0]),
                                                                      "preserve": "none"}
        ns = preserved_null_space(stats, hp.nullspace_threshold, ctx.cache_dir)
        return ns.P, {**ns.info(), "preserve": "corpus"}

    def solve_update(self, ctx: EditContext, layer: int, resid: torch.Tensor, K: torch.Tensor,
                     stats: KeyStats) -> tuple[torch.Tensor, dict]:
        P, info = self.projection(ctx, stats)
        d = P.shape[0]
        mean_sq_norm = float(torch.trace(stats.C)) - d * stats.ridge  # E‖k‖² over the corpus, before any ridge
        alpha = self.hparams.l2 * (mean_sq_norm if mean_sq_norm > 0 else 1.0)
        # Yᵀ = (K Kᵀ P + α I)⁻¹ K Rᵀ, i.e. Y = R Kᵀ (P K Kᵀ + α I)⁻¹
        Yt = torch.linalg.solve(K @ K.T @ P + alpha * torch.eye(d, dtype=P.dtype), K @ resid.T)
        return Yt.T @ P, {**info, "alpha": alpha}

    def update_info(self) -> dict:
        hp = self.hparams
        return {"l2": hp.l2, "nullspace_threshold": hp.nullspace_threshold, "preserve": hp.preserve}
