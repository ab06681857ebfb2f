"""Small forward-hook helpers: record a module's input/output, or replace its output."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from kdel.models.adapter import first_tensor, with_first_tensor


@contextmanager
def _record(modules: dict[str, nn.Module], detach: bool, inputs: bool) -> Iterator[dict[str, torch.Tensor]]:
    store: dict[str, torch.Tensor] = {}
    handles = []
    for name, mod in modules.items():

        def keep(t: torch.Tensor, name=name) -> None:
            store[name] = t.detach() if detach else t

        if inputs:
            handles.append(mod.register_forward_pre_hook(lambda _m, inp, keep=keep: keep(inp[0])))
        else:
            handles.append(mod.register_forward_hook(lambda _m, _inp, out, keep=keep: keep(first_tensor(out))))
    try:
        yield store
    finally:
        for h in handles:
            h.remove()


def record_outputs(modules: dict[str, nn.Module], detach: bool = True):
    """Context manager: within it, `store[name]` holds the hidden-state output of each module from the last forward."""
    return _record(modules, detach, inputs=False)


def record_inputs(modules: dict[str, nn.Module], detach: bool = True):
    """Context manager: within it, `store[name]` holds the first positional input of each module from the last forward."""
    return _record(modules, detach, inputs=True)


@contextmanager
def edit_output(module: nn.Module, fn: Callable[[torch.Tensor], torch.Tensor]) -> Iterator[None]:
    """Within the block, the module's hidden-state output is replaced by fn(output)."""

    def hook(_m, _inp, out):
        return with_first_tensor(out, fn(first_tensor(out)))

    h = module.register_forward_hook(hook)
    try:
        yield
    finally:
        h.remove()
