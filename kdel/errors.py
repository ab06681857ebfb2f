"""Error types. A `UserError` is bad input: the CLI prints its message on one line and exits 2.

`UserError` is synth_kg's error class itself (synth_kg imports nothing from kdel), so a bad KG bundle or
generator flag raised inside synth_kg is the same `UserError` here: one line, exit 2.
"""

from synth_kg.errors import UserError

__all__ = ["UserError"]
