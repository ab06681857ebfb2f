"""Error types the CLI turns into one line on stderr.

`UserError` is bad input (exit 2); `StageFailed` is a run that could not finish for a reason the user can act
on, although the input was valid (exit 1), e.g. training that diverged. Anything else is a bug (exit 1, with
"internal error").

`UserError` is synth_kg's error class itself (synth_kg imports nothing from kdel), so a bad KG bundle or
generator flag raised inside synth_kg is the same `UserError` here: one line, exit 2.
"""

from synth_kg.errors import UserError

__all__ = ["StageFailed", "UserError"]


class StageFailed(Exception):
    """A stage ran on valid input but could not produce a result (nothing was written). Exit code 1."""
