"""Train toy GPT-2 models on a synthetic KG until they memorize its facts."""

from kdel.train.loop import TrainConfig, train_model
from kdel.train.presets import PRESETS, Preset, get_preset
from kdel.train.report import TrainReport, evaluate_recall

__all__ = ["PRESETS", "Preset", "TrainConfig", "TrainReport", "evaluate_recall", "get_preset", "train_model"]
