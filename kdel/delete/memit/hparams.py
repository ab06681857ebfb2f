"""MEMIT hyperparameters, with defaults for the toy presets (docs/methods.md, "memit")."""

from __future__ import annotations

from dataclasses import dataclass

from kdel.delete.hparams import require
from kdel.delete.rome.hparams import RomeHparams


@dataclass
class MemitHparams(RomeHparams):
    n_layers: int = 3  # window of layers around the central layer (clipped to the model)
    # λ of ΔW = R Kᵀ(λC + K Kᵀ)⁻¹: how strongly the corpus keys are preserved. For one fact the update is
    # shrunk by kᵀC⁻¹k / (λ + kᵀC⁻¹k), and kᵀC⁻¹k ≈ d_mlp (512 in `tiny`): λ = 1000 erased 2/6 calibration
    # facts of the default KG (last token, layer 1), λ = 100 erased 6/6 with unrelated accuracy 1.0.
    update_weight: float = 100.0
    clamp_factor: float = 0.75  # ||δ|| <= clamp_factor * ||z0|| (z0: the residual stream at the top layer)

    def validate(self) -> None:
        super().validate()
        require(self.n_layers >= 1, f"n_layers must be >= 1, got {self.n_layers}")
        require(self.update_weight > 0, f"update_weight must be > 0, got {self.update_weight}")
