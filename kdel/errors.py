"""Error types. A `UserError` is bad input: the CLI prints its message on one line and exits 2."""


class UserError(Exception):
    """Bad input from the user (a file, a flag, a fact id). Never a bug in kdel."""
