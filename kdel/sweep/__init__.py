"""`kdel sweep`: a grid of conditions × seeds (each seed a new KG and a newly trained model), cells cached by
their inputs and resumable, aggregated across seeds into results.json, cases.csv, figures and RESULTS.md."""

from kdel.sweep.config import Condition, SweepConfig, load_config, parse_config
from kdel.sweep.grid import Cell, Job, Plan, expand
from kdel.sweep.run import SweepOptions, SweepResult, run_sweep

__all__ = ["Cell", "Condition", "Job", "Plan", "SweepConfig", "SweepOptions", "SweepResult", "expand", "load_config",
           "parse_config", "run_sweep"]
