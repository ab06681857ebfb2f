"""kdel: delete knowledge from language models and audit the collateral damage.

Pipeline: synth_kg (generate) -> kdel.train -> kdel.trace -> kdel.delete -> kdel.audit -> kdel.report.
"""

__version__ = "0.1.0"
