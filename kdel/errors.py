"""Error types the CLI turns into one line on stderr.

`UserError` is bad input (exit 2); `StageFailed` is a run that could not finish for a reason the user can act
on, although the input was valid (exit 1), e.g. training that diverged. Anything else is a bug (exit 1, with
"internal error").
"""


class UserError(Exception):
    """Bad input from the user (a file, a flag, a fact id). Never a bug in kdel."""


class StageFailed(Exception):
    """A stage ran on valid input but could not produce a result (nothing was written). Exit code 1."""
