"""Process-wide runtime settings: threads, device, seeds, and how warnings are shown."""

from __future__ import annotations

import contextlib
import os
import random
import sys
import warnings

from kdel.errors import UserError

# Measured on 2-vCPU machines: one thread is ~5x faster than two for the small models kdel trains.
DEFAULT_THREADS = int(os.environ.get("KDEL_THREADS", "1"))


def set_threads(n: int | None = None) -> int:
    import torch

    n = DEFAULT_THREADS if n is None else n
    if n < 1:
        raise UserError(f"--threads must be >= 1, got {n}")
    torch.set_num_threads(n)
    return n


def resolve_device(device: str | None) -> str:
    """'cpu', 'cuda' or 'cuda:N' (None = cpu). `cuda` without CUDA is a user error."""
    import torch

    if device in (None, "", "cpu"):
        return "cpu"
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(f"--device {device} was asked for but CUDA is not available on this machine")
        return device
    raise UserError(f"unknown device {device!r}: use cpu or cuda")


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    if seed < 0:
        raise UserError(f"seed must be >= 0, got {seed}")
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


# developer-facing notices of third-party libraries: not the user's business
_HIDDEN = (DeprecationWarning, PendingDeprecationWarning, FutureWarning)


def show_warning(message, category=None, filename=None, lineno=None, file=None, line=None) -> None:
    """The one warning handler: `kdel: warning: <the message on one line>` on stderr."""
    text = " ".join(str(message).split())
    print(f"kdel: warning: {text}", file=sys.stderr if file is None else file, flush=True)


def install_warning_handler() -> None:
    """Show every warning of this process as one `kdel: warning:` line (for worker processes the CLI starts;
    the CLI itself uses `one_line_warnings`). Library code keeps calling warnings.warn."""
    warnings.showwarning = show_warning
    for category in _HIDDEN:
        warnings.filterwarnings("ignore", category=category)


@contextlib.contextmanager
def one_line_warnings():
    """`install_warning_handler` for the duration of a `with` block; the previous handler comes back after."""
    with warnings.catch_warnings():
        install_warning_handler()
        yield
