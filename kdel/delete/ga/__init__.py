"""Gradient ascent unlearning (`ga`), on the shared loop of kdel.delete.unlearn."""

from kdel.delete.ga.hparams import GAHparams
from kdel.delete.ga.method import GradientAscent
from kdel.delete.unlearn.hparams import UnlearnHparams

__all__ = ["GAHparams", "GradientAscent", "UnlearnHparams"]
