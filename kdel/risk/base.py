"""One pass over every fact of a table with the unedited model: what the risk features need per fact, whatever
the case (which fact is deleted, by which method, where).

For each fact's canonical prompt followed by its object (teacher forcing), at each requested layer:
  keys    the input of the MLP output projection (the key k) at every position that feeds the object's
          prediction (prompt positions and all object tokens but the last), float32;
  values  the MLP output projection's output (v = W k + b) at the fact's two edit sites;
  grads   d log p(o) / d v at every such position (the total derivative: through attention, later layers
          and the softmax), float32.
and once: log p(o), the log-probability margin of o (min over its tokens of log p(token) − the best other
token's log p; > 0 iff the object is recalled), and each object's unembedding direction.

A rank-one update ΔW = c uᵀ moves the MLP output at a position with key k by c (uᵀk): `keys` give that
transfer at every position of every fact in one matrix product, and `grads` its first-order effect on
log p(o) (kdel.risk.features).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from kdel.models.adapter import ModelAdapter, first_tensor, with_first_tensor
from kdel.models.positions import site_position
from kdel.models.scoring import _pad_batch, _pad_id, encode_prompt_target, gather_target_logprobs

SITES = ("subject_last", "last")
BATCH_TOKENS = 2048  # padded tokens per forward/backward


@dataclass
class ProbeBase:
    """Per-fact quantities of the unedited model (rows = fact ids, in table order)."""

    layers: list[int]
    n_layers: int
    lengths: np.ndarray  # (n,) positions that feed the object's prediction: len(prompt) + len(object) - 1
    site_pos: dict[str, np.ndarray]  # site -> (n,) token index of the site in the canonical prompt
    keys: dict[int, torch.Tensor]  # layer -> (n, T, d_mlp) float32, zero beyond lengths
    grads: dict[int, torch.Tensor]  # layer -> (n, T, d_model) float32, zero beyond lengths
    values: dict[tuple[str, int], torch.Tensor]  # (site, layer) -> (n, d_model) float64
    logp: np.ndarray  # (n,) log p(o | canonical prompt)
    margin: np.ndarray  # (n,) min over o's tokens of log p(token) − max log p(other token)
    recalled: np.ndarray  # (n,) bool, every object token top-1
    object_vec: np.ndarray  # (n, d_model) unit mean unembedding of each fact's object tokens

    def key_at(self, site: str, layer: int) -> torch.Tensor:
        """(n, d_mlp) float64: each fact's key at its own `site` position."""
        rows = torch.arange(len(self.lengths))
        return self.keys[layer][rows, torch.as_tensor(self.site_pos[site])].double()

    def grad_at(self, site: str, layer: int) -> torch.Tensor:
        rows = torch.arange(len(self.lengths))
        return self.grads[layer][rows, torch.as_tensor(self.site_pos[site])].double()

    def mask(self) -> torch.Tensor:
        """(n, T) bool: positions within each fact's length."""
        T = next(iter(self.keys.values())).shape[1]
        return torch.arange(T)[None, :] < torch.as_tensor(self.lengths)[:, None]


def _batches(lengths: list[int], max_tokens: int):
    order = np.argsort(lengths, kind="stable")
    chunk: list[int] = []
    for i in order:
        if chunk and (len(chunk) + 1) * lengths[i] > max_tokens:
            yield chunk
            chunk = []
        chunk.append(int(i))
    if chunk:
        yield chunk


def _object_vectors(adapter: ModelAdapter, encoded) -> np.ndarray:
    U = adapter.unembedding_matrix().detach().double().cpu()
    vecs = torch.stack([U[torch.tensor(t)].mean(dim=0) for _, t in encoded])
    return torch.nn.functional.normalize(vecs, dim=1).numpy()


def compute_base(model, tokenizer, table, layers=None, max_tokens: int = BATCH_TOKENS) -> ProbeBase:
    """The per-fact pass (see the module docstring) at `layers` (default: every layer)."""
    adapter = ModelAdapter(model, tokenizer)
    layers = sorted(set(range(adapter.n_layers) if layers is None else (adapter._check_layer(int(x)) for x in layers)))
    facts = list(table.facts)
    encoded = [encode_prompt_target(tokenizer, f.prompt, f.target) for f in facts]
    seqs = [p + t for p, t in encoded]
    lengths = np.array([len(s) - 1 for s in seqs], dtype=np.int64)
    T = int(lengths.max())
    n = len(facts)
    site_pos = {s: np.array([site_position(tokenizer, f.prompt, f.subject, s) for f in facts], dtype=np.int64)
                for s in SITES}
    d_mlp = {layer: adapter.d_mlp(layer) for layer in layers}
    keys = {layer: torch.zeros((n, T, d_mlp[layer]), dtype=torch.float32) for layer in layers}
    grads = {layer: torch.zeros((n, T, adapter.d_model), dtype=torch.float32) for layer in layers}
    values = {(s, layer): torch.zeros((n, adapter.d_model), dtype=torch.float64) for s in SITES for layer in layers}
    logp = np.zeros(n)
    margin = np.zeros(n)
    recalled = np.zeros(n, dtype=bool)
    device = adapter.device
    pad = _pad_id(tokenizer)
    was_training = model.training
    model.eval()
    try:
        for chunk in _batches([len(s) for s in seqs], max_tokens):
            _run_chunk(adapter, [seqs[i] for i in chunk], [encoded[i] for i in chunk], chunk, layers, pad, device,
                       keys, grads, values, site_pos, logp, margin, recalled)
    finally:
        model.train(was_training)
    return ProbeBase(layers=layers, n_layers=adapter.n_layers, lengths=lengths, site_pos=site_pos, keys=keys,
                     grads=grads, values=values, logp=logp, margin=margin, recalled=recalled,
                     object_vec=_object_vectors(adapter, encoded))


def _run_chunk(adapter, seqs, encoded, chunk, layers, pad, device, keys, grads, values, site_pos, logp, margin,
               recalled) -> None:
    ids, mask = _pad_batch(seqs, pad, device)
    B, W = ids.shape
    probes = {layer: torch.zeros((B, W, adapter.d_model), device=device, requires_grad=True) for layer in layers}
    rec_k: dict[int, torch.Tensor] = {}
    rec_v: dict[int, torch.Tensor] = {}
    handles = []
    for layer in layers:
        mod = adapter.mlp_out(layer)

        def pre(_m, inp, layer=layer):
            rec_k[layer] = inp[0].detach()

        def post(_m, _inp, out, layer=layer):
            h = first_tensor(out)
            rec_v[layer] = h.detach()
            return with_first_tensor(out, h + probes[layer].to(h.dtype))

        handles += [mod.register_forward_pre_hook(pre), mod.register_forward_hook(post)]
    try:
        with torch.enable_grad():
            logits = adapter.model(input_ids=ids, attention_mask=mask).logits
            lp, tgt, seg_t = gather_target_logprobs(logits, encoded)  # the one log-prob gather
            seg = seg_t.tolist()
            own = lp.gather(1, tgt[:, None])[:, 0]
            order = list(layers)
            got = torch.autograd.grad(own.sum(), [probes[layer] for layer in order])  # parameters' .grad untouched
            grad_of = dict(zip(order, got))
    finally:
        for h in handles:
            h.remove()
    with torch.no_grad():
        other = lp.detach().scatter(1, tgt[:, None], float("-inf")).max(dim=1).values
        tok_margin = (own.detach() - other).double().cpu().numpy()
        tok_lp = own.detach().double().cpu().numpy()
        seg_np = np.asarray(seg)
        for j, i in enumerate(chunk):
            sel = seg_np == j
            logp[i] = tok_lp[sel].sum()
            margin[i] = tok_margin[sel].min()
            recalled[i] = bool((tok_margin[sel] > 0).all())
            L = len(seqs[j]) - 1
            for layer in layers:
                keys[layer][i, :L] = rec_k[layer][j, :L].float().cpu()
                grads[layer][i, :L] = grad_of[layer][j, :L].float().cpu()
                for s in SITES:
                    values[(s, layer)][i] = rec_v[layer][j, int(site_pos[s][i])].double().cpu()
