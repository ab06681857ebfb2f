"""The one error type for bad input (a flag, a config value, a broken bundle).

synth_kg stands alone (it imports nothing from kdel), so the class lives here; `kdel.errors.UserError` is
this very class, so kdel's CLI prints a KG error on one line and exits 2 like any other bad input, and
`except UserError` catches it on either side.
"""


class UserError(Exception):
    """Bad input from the user (a file, a flag, an id). Never a bug in the code."""
