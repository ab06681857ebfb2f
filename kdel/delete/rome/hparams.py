"""ROME / r-ROME hyperparameters, with defaults tuned on the toy presets (docs/methods.md, "rome" and "r-rome")."""

from __future__ import annotations

from dataclasses import dataclass

from kdel.delete.hparams import require
from kdel.delete.values import ValueSettings


@dataclass
class RomeHparams:
    # keys: the fact's training prompts (0 = all of them), bare and after `n_prefixes` corpus sentences
    n_templates: int = 0
    n_prefixes: int = 5
    # v*: Adam on δ added at the MLP output at the edit site
    lr: float = 0.5
    steps: int = 40
    clamp_factor: float = 4.0  # ||δ|| <= clamp_factor * ||v0|| (v0: the MLP output at the bare prompt's site)
    kl_factor: float = 0.0625  # KL on the subject's other training prompts
    kl_prompts: int = 5
    weight_decay: float = 0.0  # penalty on ||δ||² / ||v0||² (p(o) saturates near 1: a penalty stalls erasing)
    margin: float = 2.0  # log-prob margin: erase stops once o is beaten by it on every edit text
    # key statistics C = E[k kᵀ]
    cov_ridge: float = 0.01  # λ of the ridge λ·tr(C)/d·I, used when tokens < d or C is ill-conditioned
    max_condition: float = 1e6
    cov_batch_size: int = 64

    def validate(self) -> None:
        require(self.n_templates >= 0, f"n_templates must be >= 0 (0 = all), got {self.n_templates}")
        require(self.n_prefixes >= 0, f"n_prefixes must be >= 0, got {self.n_prefixes}")
        require(self.lr > 0, f"lr must be > 0, got {self.lr}")
        require(self.steps >= 1, f"steps must be >= 1, got {self.steps}")
        require(self.clamp_factor > 0, f"clamp_factor must be > 0, got {self.clamp_factor}")
        require(self.kl_factor >= 0, f"kl_factor must be >= 0, got {self.kl_factor}")
        require(self.kl_prompts >= 0, f"kl_prompts must be >= 0, got {self.kl_prompts}")
        require(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
        require(self.margin >= 0, f"margin must be >= 0, got {self.margin}")
        require(self.cov_ridge > 0, f"cov_ridge must be > 0, got {self.cov_ridge}")
        require(self.max_condition > 1, f"max_condition must be > 1, got {self.max_condition}")
        require(self.cov_batch_size >= 1, f"cov_batch_size must be >= 1, got {self.cov_batch_size}")

    def delta_settings(self) -> ValueSettings:
        return ValueSettings(lr=self.lr, steps=self.steps, clamp_factor=self.clamp_factor, kl_factor=self.kl_factor,
                             weight_decay=self.weight_decay, margin=self.margin)
