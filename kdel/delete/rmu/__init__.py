"""RMU (Li et al. 2024, the WMDP benchmark): representation misdirection (registered as 'rmu')."""

from kdel.delete.rmu.method import RMU, RMUHparams

__all__ = ["RMU", "RMUHparams"]
