"""`kdel pipeline`: the whole chain (generate → train → trace → audit → report) for BA and ER graphs."""

from kdel.pipeline.presets import PRESETS, PUBLIC_PRESETS, PipelinePreset, get_preset
from kdel.pipeline.run import PipelineOptions, PipelineResult, run_pipeline

__all__ = ["PRESETS", "PUBLIC_PRESETS", "PipelineOptions", "PipelinePreset", "PipelineResult", "get_preset",
           "run_pipeline"]
