"""Recorded runs: the clean and corrupted runs of many facts, keeping what patching needs.

What a recording keeps (each optional, to bound memory): every component's output (resid = block output,
mlp, attn) at every layer (the *source* of patches), every block's input and every layer's attention
keys/values (the *base* a patched run resumes from), the keyword arguments of a block call (rotary position
embeddings and the like) and the logits at each row's last real position. Rows are concatenated run by run
(`RunInput.n_rows` rows each: one per noise draw); prompts of different lengths are right-padded (with
causal attention a row's real positions never attend to its padding).

- `record_runs`: one ordinary forward over all rows (the clean runs).
- `record_from`: runs that equal a recorded run before some position (a corrupted prompt equals its clean
  prompt before the first corrupted token): only the positions from there on are computed, attending to the
  recorded run's keys/values; the earlier positions are copied from it. Exactly the full forward's values.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import NamedTuple

import torch

from kdel.models.adapter import ModelAdapter, first_tensor, with_first_tensor
from kdel.models.hooks import record_outputs
from kdel.trace.blocks import RecordKV, bind_call, block0_inputs, cache_name, call_kwargs, causal_mask, kv_rows
from kdel.trace.corrupt import RunInput

COMPONENTS = ("resid", "mlp", "attn")


@dataclass
class RecordedRun:
    acts: dict[tuple[str, int], torch.Tensor]  # (component, layer) -> (rows, T, d) output
    block_inputs: list[torch.Tensor]  # layer -> (rows, T, d) input of the block
    block_call: dict  # keyword arguments of a block call (hidden state and cache excluded)
    logits: torch.Tensor  # (rows, vocab) at each row's last real position
    kv: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)  # layer -> (keys, values),
    # each (rows, kv heads, T, head_dim)
    offsets: list[int] = field(default_factory=lambda: [0])  # run i has rows offsets[i]:offsets[i + 1]
    additive: bool = False  # every block's output = its input + attn output + mlp output (checked)

    def rows(self, i: int) -> slice:
        return slice(self.offsets[i], self.offsets[i + 1])


def noise_hook(noise: torch.Tensor, positions: list[int]):
    """Forward hook for the token embedding: adds noise[row] at the subject positions (one run)."""
    pos = torch.tensor(positions, device=noise.device)

    def hook(_m, _inp, out):
        out = out.clone()
        out[:, pos] = out[:, pos] + noise
        return out

    return hook


def _batch_inputs(adapter: ModelAdapter, runs: list[RunInput]):
    """Right-padded ids (rows, T), the embedding noise (rows, T, d) or None, and each row's last position."""
    w = adapter.embedding_matrix()
    t_max = max(len(r.ids) for r in runs)
    ids, last, noise_rows = [], [], []
    has_noise = any(r.noise is not None for r in runs)
    for r in runs:
        row = list(r.ids) + [r.ids[-1]] * (t_max - len(r.ids))
        ids += [row] * r.n_rows
        last += [len(r.ids) - 1] * r.n_rows
        if has_noise:
            z = torch.zeros((r.n_rows, t_max, w.shape[1]), dtype=w.dtype, device=w.device)
            if r.noise is not None:
                z[:, r.subject_positions] = r.noise.to(device=w.device, dtype=w.dtype)
            noise_rows.append(z)
    ids_t = torch.tensor(ids, dtype=torch.long, device=adapter.device)
    return ids_t, (torch.cat(noise_rows) if has_noise else None), torch.tensor(last, device=adapter.device)


def _offsets(runs: list[RunInput]) -> list[int]:
    out = [0]
    for r in runs:
        out.append(out[-1] + r.n_rows)
    return out


def _modules(adapter: ModelAdapter, acts, base: bool) -> dict[tuple[str, int], torch.nn.Module]:
    comps = set(acts or ()) | ({"mlp", "attn"} if base else set())
    return {(c, i): adapter.component(c, i) for c in COMPONENTS if c in comps for i in range(adapter.n_layers)}


@torch.no_grad()
def record_runs(adapter: ModelAdapter, runs: list[RunInput], acts=COMPONENTS, base: bool = True) -> RecordedRun:
    """One forward over `runs` (all their rows), recording the outputs of the components in `acts` and, with
    `base`, block inputs, keys/values, the block call and the mlp/attn outputs (for the additivity check)."""
    n = adapter.n_layers
    modules = _modules(adapter, acts, base)
    names = {k: f"{k[0]}.{k[1]}" for k in modules}
    inputs: dict[int, torch.Tensor] = {}
    call: dict[str, dict] = {}
    recorder = RecordKV()
    handles = []

    def pre(layer):
        block = adapter.layer(layer)
        cname = cache_name(block)

        def hook(_m, args, kwargs):
            named = bind_call(block, args, kwargs)
            hidden = named.pop("hidden_states", None)
            if hidden is None:
                hidden = args[0]
            inputs[layer] = hidden.detach()
            if cname is not None:
                named.pop(cname, None)
            if layer == 0:
                call["c"] = dict(named)
            if cname is None:
                return None
            named[cname] = recorder
            return (hidden,), named

        return hook

    ids, noise, last = _batch_inputs(adapter, runs)
    if base:
        for i in range(n):
            handles.append(adapter.layer(i).register_forward_pre_hook(pre(i), with_kwargs=True))
    if noise is not None:
        handles.append(adapter.embed.register_forward_hook(lambda _m, _i, out: out + noise))
    keep = torch.unique(last)
    try:
        with record_outputs({names[k]: m for k, m in modules.items()}) as store:
            out = adapter.model(input_ids=ids, use_cache=False, logits_to_keep=keep)
            recorded = {k: store[names[k]] for k in modules}
    finally:
        for h in handles:
            h.remove()
    logits = out.logits[torch.arange(len(last), device=last.device), torch.searchsorted(keep, last)]
    blocks_in = [inputs[i] for i in range(n)] if base else []
    rec = RecordedRun(recorded, blocks_in, call.get("c", {}), logits, dict(recorder.kv), _offsets(runs))
    rec.additive = base and _is_additive(rec, n)
    return rec


def record_run(adapter: ModelAdapter, run: RunInput) -> RecordedRun:
    """One run alone."""
    return record_runs(adapter, [run])


class FromBatch(NamedTuple):
    """One batch of `forward_from`: runs with the same (start, length T)."""

    idx: list[int]  # the runs
    rows: torch.Tensor  # their rows in the recording being made
    src: torch.Tensor  # each row's run in `prior`
    start: int
    T: int
    inputs: list[torch.Tensor]  # with `base`: each block's input at positions start..T-1
    outputs: dict  # (component, layer) -> output at positions start..T-1
    kv: dict  # with `base`: layer -> the new keys/values
    logits: torch.Tensor  # at the last position
    leaves: dict  # (component, layer) -> the zero leaf added to that output (gradients reach it)


def forward_from(adapter: ModelAdapter, prior: RecordedRun, runs: list[RunInput], starts: list[int],
                 modules: dict, base: bool, leaves=()):
    """The forward of `runs` from position starts[i] on (run i equals `prior`'s run i before it), attending to
    `prior`'s keys/values; runs with the same (start, length) share one batch. Yields a `FromBatch` per batch:
    outputs of the `modules` ({(component, layer): module}); with `base`, each block's input and its new
    keys/values. `leaves`: components whose outputs get a zero tensor requiring gradients added, so that
    gradients of anything computed from the logits reach them (attribution patching)."""
    n_layers, dev = adapter.n_layers, adapter.device
    offsets = _offsets(runs)
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, (r, s) in enumerate(zip(runs, starts)):
        groups[(min(s, len(r.ids) - 1), len(r.ids))].append(i)
    for (start, T), idx in sorted(groups.items()):
        rows = torch.tensor([r for i in idx for r in range(offsets[i], offsets[i + 1])], device=dev)
        src = torch.tensor([prior.offsets[i] for i in idx for _ in range(runs[i].n_rows)], device=dev)
        n = T - start
        ids, noise, _ = _batch_inputs(adapter, [runs[i] for i in idx])
        hook = (lambda _m, _i, out: out + noise) if noise is not None else None
        hidden = block0_inputs(adapter, ids, hook)[:, start:]
        pos = start + torch.arange(n, device=dev)[None, :]
        call = call_kwargs(prior.block_call, pos, causal_mask(start, n, hidden.dtype, dev))
        rec = RecordKV(lambda layer, src=src, start=start: kv_rows(prior.kv[layer], src, start))
        outputs, leaf, inputs, handles = {}, {}, [], []

        def capture(key):
            def fn(_m, _inp, out):
                h = first_tensor(out)
                outputs[key] = h.detach()
                if key[0] not in leaves:
                    return None
                leaf[key] = torch.zeros_like(h, requires_grad=True)
                return with_first_tensor(out, h + leaf[key])

            return fn

        for key, module in modules.items():
            handles.append(module.register_forward_hook(capture(key)))
        try:
            with torch.set_grad_enabled(bool(leaves)):
                for layer in range(n_layers):
                    if base:
                        inputs.append(hidden.detach())
                    block = adapter.layer(layer)
                    hidden = first_tensor(block(hidden, **{**call, cache_name(block): rec}))
                logits = adapter.unembed(adapter.final_norm(hidden[:, -1:]))[:, -1]
        finally:
            for h in handles:
                h.remove()
        yield FromBatch(idx, rows, src, start, T, inputs, outputs, rec.kv, logits, leaf)


def assemble_from(adapter: ModelAdapter, prior: RecordedRun, runs: list[RunInput], batches, modules: dict,
                  base: bool) -> RecordedRun:
    """The RecordedRun of `forward_from`'s batches: each row's computed positions, and `prior`'s values before
    them (where both runs are identical)."""
    n_layers, dev = adapter.n_layers, adapter.device
    offsets = _offsets(runs)
    t_max = max(len(r.ids) for r in runs)

    def full_like(x: torch.Tensor, kv: bool = False) -> torch.Tensor:
        shape = (offsets[-1], x.shape[1], t_max, x.shape[3]) if kv else (offsets[-1], t_max, *x.shape[2:])
        return torch.zeros(shape, dtype=x.dtype, device=x.device)

    out_acts = {k: full_like(prior.acts[k]) for k in modules}
    out_in = [full_like(x) for x in prior.block_inputs] if base else []
    out_kv = {i: tuple(full_like(x, kv=True) for x in prior.kv[i]) for i in range(n_layers)} if base else {}
    logits = torch.zeros((offsets[-1], prior.logits.shape[-1]), dtype=prior.logits.dtype, device=dev)
    with torch.no_grad():
        for b in batches:
            rows, src, start, T = b.rows, b.src, b.start, b.T
            logits[rows] = b.logits.detach().to(logits.dtype)
            for k in modules:
                out_acts[k][rows, start:T] = b.outputs[k]
                out_acts[k][rows, :start] = prior.acts[k][src, :start]
            for layer in range(n_layers if base else 0):
                out_in[layer][rows, start:T] = b.inputs[layer]
                out_in[layer][rows, :start] = prior.block_inputs[layer][src, :start]
                for j in range(2):
                    out_kv[layer][j][rows, :, start:T] = b.kv[layer][j]
                    out_kv[layer][j][rows, :, :start] = prior.kv[layer][j][src, :, :start]
    result = RecordedRun(out_acts, out_in, prior.block_call, logits, out_kv, offsets)
    result.additive = base and _is_additive(result, n_layers)
    return result


@torch.no_grad()
def record_from(adapter: ModelAdapter, prior: RecordedRun, runs: list[RunInput], starts: list[int],
                acts=COMPONENTS, base: bool = True) -> RecordedRun:
    """Record `runs`, where run i equals run i of `prior` (a full recording, one row per run) before position
    starts[i]: positions from starts[i] on are computed, attending to `prior`'s keys/values; earlier ones are
    copied. Runs with the same (start, length) share one batch."""
    modules = _modules(adapter, acts, base)
    batches = forward_from(adapter, prior, runs, starts, modules, base)
    return assemble_from(adapter, prior, runs, batches, modules, base)


def _is_additive(rec: RecordedRun, n_layers: int) -> bool:
    """Whether block l's output (block l+1's input) is its input + attention output + MLP output, as in
    GPT-2, Llama and GPT-NeoX (sequential or parallel): then patching the MLP output at one position changes
    the block's output there by exactly the change of the MLP output."""
    x = rec.block_inputs
    for layer in range(n_layers - 1):
        diff = x[layer + 1] - (x[layer] + rec.acts[("attn", layer)] + rec.acts[("mlp", layer)])
        scale = float(x[layer + 1].abs().max()) + 1.0
        if float(diff.abs().max()) > 1e-4 * scale:
            return False
    return True
