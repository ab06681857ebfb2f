"""MEMIT: many facts in one update spread over a range of MLP layers (registered as 'memit')."""

from kdel.delete.memit.hparams import MemitHparams
from kdel.delete.memit.method import Memit, layer_window

__all__ = ["Memit", "MemitHparams", "layer_window"]
