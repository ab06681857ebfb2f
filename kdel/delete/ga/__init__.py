"""Gradient ascent unlearning (`ga`) and the gradient-edit loop shared with `npo` and `ft`."""

from kdel.delete.ga.hparams import GAHparams, UnlearnHparams
from kdel.delete.ga.method import GradientAscent

__all__ = ["GAHparams", "GradientAscent", "UnlearnHparams"]
