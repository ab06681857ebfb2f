"""AlphaEdit hyperparameters: the paper's defaults where they transfer, tiny-model defaults where they do not
(docs/methods.md says which)."""

from __future__ import annotations

from dataclasses import dataclass

from kdel.delete.hparams import require
from kdel.delete.rome.hparams import RomeHparams

PRESERVE = ("corpus", "none")


@dataclass
class AlphaEditHparams(RomeHparams):
    n_layers: int = 3  # window of layers around the central layer (the paper edits 6 of GPT-J's 28; MEMIT's 3 here)
    clamp_factor: float = 0.75  # ||δ|| <= clamp_factor * ||z0|| (the paper's and MEMIT's)
    # P projects onto the eigenvectors of the preserved keys' second moment C = K0K0ᵀ/n whose eigenvalue is below
    # nullspace_threshold · (largest eigenvalue). The paper thresholds absolute eigenvalues at 2e-2 (GPT-J,
    # Wikipedia keys); a relative threshold is scale-free across models, layers and corpus sizes.
    nullspace_threshold: float = 1e-2
    # α of ΔW = R Kᵀ P (K Kᵀ P + α I)⁻¹, relative to the corpus keys' mean squared norm: α = l2 · tr(C) = l2 · E‖k‖².
    # The paper's L2 = 10 is absolute; a single fact's update is shrunk by ‖Pk‖² / (α + ‖Pk‖²), so α only
    # means something next to the keys' scale.
    l2: float = 0.01
    preserve: str = "corpus"  # "corpus": K0 = the corpus keys (the key statistics); "none": P = I, no projection

    def validate(self) -> None:
        super().validate()
        require(self.n_layers >= 1, f"n_layers must be >= 1, got {self.n_layers}")
        require(0 < self.nullspace_threshold < 1, f"nullspace_threshold must be in (0, 1), got {self.nullspace_threshold}")
        require(self.l2 > 0, f"l2 must be > 0, got {self.l2}")
        require(self.preserve in PRESERVE, f"preserve must be one of {', '.join(PRESERVE)}, got {self.preserve!r}")
