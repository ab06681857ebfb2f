"""Negative preference optimisation (`npo`, Zhang et al. 2024)."""

from kdel.delete.npo.method import NPO, NPOHparams

__all__ = ["NPO", "NPOHparams"]
