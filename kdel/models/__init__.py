"""Models: architecture maps, hooks, loading and batched scoring for GPT-2, Llama and GPT-NeoX."""

from kdel.models.adapter import ARCHITECTURES, ArchSpec, ModelAdapter
from kdel.models.scoring import TargetScores, encode_prompt_target, score_targets

__all__ = ["ARCHITECTURES", "ArchSpec", "ModelAdapter", "TargetScores", "encode_prompt_target", "score_targets"]
