"""`kdel` entry point: assembles the stage commands and turns user errors into one line + exit 2.

Exit codes: 0 ok, 2 bad input (one clear line on stderr), 1 a stage that could not finish (one line) or an
internal error. Every warning, kdel's or a library's, is one `kdel: warning: ...` line on stderr.
Set KDEL_DEBUG=1 to see the traceback of an internal error.
"""

from __future__ import annotations

import os
import sys

import click
import typer

try:  # typer >= 0.20 vendors its own click; its exceptions are not click's
    from typer._click import exceptions as _typer_click
except ImportError:  # pragma: no cover - older typer uses click itself
    _typer_click = None

from kdel.errors import StageFailed, UserError

app = typer.Typer(
    name="kdel",
    help="Delete knowledge from language models and audit the collateral damage.\n\n"
    "Pipeline: kg generate -> train -> trace -> delete -> audit -> report (or all at once: pipeline).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# Each stage module exposes `register(app)`. Imports inside the commands stay lazy so --help is fast.
from kdel.cli import kg as _kg  # noqa: E402

_kg.register(app)
for _name in ("train", "trace", "delete", "forget", "audit", "report", "pipeline", "sweep", "risk", "plan"):
    try:
        _mod = __import__(f"kdel.cli.{_name}", fromlist=["register"])
    except ModuleNotFoundError as _e:  # a stage not built yet
        if _e.name != f"kdel.cli.{_name}":
            raise
        continue
    _mod.register(app)


def _fail(message: str, code: int) -> int:
    message = one_line(message)  # one line, always
    print(f"kdel: error: {message}", file=sys.stderr)
    return code


def _exc(name: str) -> tuple[type, ...]:
    """The click exception class `name` from click and from typer's vendored copy."""
    mods = [click.exceptions] + ([_typer_click] if _typer_click is not None else [])
    return tuple({getattr(m, name) for m in mods if hasattr(m, name)})


def _quiet_libraries() -> None:
    """No third-party progress bars or warnings on stderr: kdel prints its own progress and one-line errors."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()


def one_line(message) -> str:
    return " ".join(str(message).split())


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return the exit code (used by tests and by `run`)."""
    from kdel.runtime import one_line_warnings

    _quiet_libraries()
    with one_line_warnings():  # every warning, kdel's or a library's, as one `kdel: warning:` line
        return _main(argv)


def _main(argv: list[str] | None) -> int:
    try:
        result = app(args=argv, prog_name="kdel", standalone_mode=False)
        return int(result) if isinstance(result, int) else 0
    except UserError as e:
        return _fail(str(e), 2)
    except StageFailed as e:
        return _fail(str(e), 1)
    except _exc("NoArgsIsHelpError"):
        return 2  # the help text was already printed
    except _exc("UsageError") as e:
        ctx = getattr(e, "ctx", None)
        where = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        return _fail(f"{e.format_message()}{where}", 2)
    except _exc("Abort"):
        return _fail("aborted", 130)
    except _exc("Exit") as e:
        return int(getattr(e, "exit_code", 0) or 0)
    except _exc("ClickException") as e:
        return _fail(e.format_message(), 2)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except Exception as e:  # an internal error: a bug, not bad input
        if os.environ.get("KDEL_DEBUG"):
            raise
        return _fail(f"internal error: {type(e).__name__}: {e} (set KDEL_DEBUG=1 for the traceback)", 1)


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
