"""SimNPO (Fan et al. 2024): NPO without the reference model (registered as 'simnpo')."""

from kdel.delete.simnpo.method import SimNPO, SimNPOHparams

__all__ = ["SimNPO", "SimNPOHparams"]
