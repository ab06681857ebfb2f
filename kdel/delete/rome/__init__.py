"""ROME: rank-one model editing of one MLP output matrix (registered as 'rome')."""

from kdel.delete.rome.hparams import RomeHparams
from kdel.delete.rome.method import RankOneUpdate, Rome

__all__ = ["RankOneUpdate", "Rome", "RomeHparams"]
