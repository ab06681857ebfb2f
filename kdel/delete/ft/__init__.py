"""Constrained fine-tuning (`ft`): Adam on one MLP layer (or a window), change clamped to an L∞ ball."""

from kdel.delete.ft.method import ConstrainedFineTuning, FTHparams, project_linf

__all__ = ["ConstrainedFineTuning", "FTHparams", "project_linf"]
