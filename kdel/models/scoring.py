"""Batched, padding-correct scoring of (prompt, target) pairs under teacher forcing (DESIGN §12).

A fact is *recalled* when every token of the target is the top-1 prediction given the prompt and the
target tokens before it; p(target) is the product of the target's token probabilities. First-token
recall and log-probability are reported beside them, never instead.

Sequences are right-padded, so real tokens never attend to padding and absolute positions are those of
the unpadded sequence: a batched score equals a one-by-one score up to float rounding.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from kdel.errors import UserError

Encoded = tuple[list[int], list[int]]  # (prompt ids incl. special tokens, target ids)


def target_text(target: str) -> str:
    """The target as appended to a prompt: one leading space unless it already starts with whitespace."""
    return target if target[:1].isspace() else " " + target


def encode_prompt(tokenizer, prompt: str) -> list[int]:
    return list(tokenizer(prompt)["input_ids"])


def encode_prompt_target(tokenizer, prompt: str, target: str) -> Encoded:
    """Token ids of the prompt (with the tokenizer's special tokens) and of the target that follows it.

    The target ids are read off the tokenization of prompt + target where the prompt's tokens are a prefix
    of it (so BPE merges across the boundary are those of the full text), else the target alone.
    """
    prompt_ids = encode_prompt(tokenizer, prompt)
    tail = target_text(target)
    plain = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    full = tokenizer(prompt + tail, add_special_tokens=False)["input_ids"]
    if full[: len(plain)] == plain and len(full) > len(plain):
        target_ids = list(full[len(plain) :])
    else:
        target_ids = list(tokenizer(tail, add_special_tokens=False)["input_ids"])
    if not target_ids:
        raise UserError(f"target {target!r} encodes to no tokens")
    return prompt_ids, target_ids


def unencodable_reason(tokenizer, text: str) -> str | None:
    """Why `text` cannot be encoded faithfully (empty, or maps to the unknown token), else None."""
    ids = tokenizer(target_text(text), add_special_tokens=False)["input_ids"]
    if not ids:
        return "it encodes to no tokens"
    unk = getattr(tokenizer, "unk_token_id", None)
    if unk is not None and unk in ids:
        return "the tokenizer maps part of it to the unknown token"
    return None


@dataclass
class TargetScores:
    """Per (prompt, target) pair: whole-target and first-token recall and log-probabilities."""

    logprob: np.ndarray  # float64, sum of the target tokens' log-probabilities = log p(target)
    recalled: np.ndarray  # bool, every target token top-1 under teacher forcing
    first_token_logprob: np.ndarray  # float64
    first_token_recalled: np.ndarray  # bool
    first_token_rank: np.ndarray  # int64, 0 = top-1
    n_target_tokens: np.ndarray  # int64

    @property
    def prob(self) -> np.ndarray:
        return np.exp(self.logprob)

    def __len__(self) -> int:
        return len(self.logprob)

    def subset(self, idx) -> TargetScores:
        return TargetScores(**{k: getattr(self, k)[idx] for k in self.__dataclass_fields__})


def _auto_batch_size(max_len: int, vocab: int, budget_bytes: float = 2.5e8) -> int:
    return int(max(1, min(512, budget_bytes // max(1, max_len * vocab * 4))))


def _pad_batch(seqs: Sequence[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, s in enumerate(seqs):
        ids[row, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[row, : len(s)] = 1
    return ids.to(device), mask.to(device)


def _pad_id(tokenizer) -> int:
    for attr in ("pad_token_id", "eos_token_id", "unk_token_id"):
        v = getattr(tokenizer, attr, None) if tokenizer is not None else None
        if v is not None:
            return int(v)
    return 0


def gather_target_logprobs(logits: torch.Tensor, encoded: Sequence[Encoded]):
    """The one log-prob gather of kdel: for pairs whose prompt + target ids are row j of `logits` (right-padded),
    return (lp, targets, pair): the float32 log-softmax at every target position of every pair, in pair order
    ((T, vocab), differentiable), the target token id predicted there (T,) and the index of its pair (T,)."""
    device = logits.device
    rows, positions, targets, pair = [], [], [], []
    for j, (p, t) in enumerate(encoded):
        for k, tid in enumerate(t):
            rows.append(j)
            positions.append(len(p) - 1 + k)
            targets.append(tid)
            pair.append(j)
    rows_t = torch.tensor(rows, device=device, dtype=torch.long)
    pos_t = torch.tensor(positions, device=device, dtype=torch.long)
    lp = torch.log_softmax(logits[rows_t, pos_t].float(), dim=-1)
    return lp, torch.tensor(targets, device=device, dtype=torch.long), torch.tensor(pair, device=device, dtype=torch.long)


def sequence_logprobs(lp: torch.Tensor, targets: torch.Tensor, pair: torch.Tensor, n_pairs: int) -> torch.Tensor:
    """log p(target | prompt) of each pair (sum over its target tokens) from `gather_target_logprobs`: (n_pairs,)."""
    tok = lp.gather(1, targets[:, None])[:, 0]
    return torch.zeros(n_pairs, dtype=tok.dtype, device=tok.device).index_add(0, pair, tok)


@torch.no_grad()
def forward_scores(model, encoded: Sequence[Encoded], pad_id: int = 0, dist_rows: Sequence[int] = (),
                   batch_size: int | None = None) -> tuple[TargetScores, dict[int, torch.Tensor]]:
    """Score pre-encoded (prompt ids, target ids) pairs in length-sorted, right-padded batches, vectorised per
    batch; also return the next-token log-distribution at the last prompt position of each row in `dist_rows`
    (from the same forward, so KL on probe prompts costs no extra pass)."""
    n = len(encoded)
    logprob = np.zeros(n, dtype=np.float64)
    recalled = np.zeros(n, dtype=bool)
    ft_lp = np.zeros(n, dtype=np.float64)
    ft_rec = np.zeros(n, dtype=bool)
    ft_rank = np.zeros(n, dtype=np.int64)
    n_tok = np.array([len(t) for _, t in encoded], dtype=np.int64)
    dists: dict[int, torch.Tensor] = {}
    if n:
        want = set(int(r) for r in dist_rows)
        device = next(model.parameters()).device
        lengths = [len(p) + len(t) for p, t in encoded]
        order = np.argsort(lengths, kind="stable")
        vocab = int(model.get_output_embeddings().weight.shape[0])
        bs = batch_size or _auto_batch_size(max(lengths), vocab)
        for start in range(0, n, bs):
            rows = order[start: start + bs]
            chunk = [encoded[r] for r in rows]
            ids, mask = _pad_batch([p + t for p, t in chunk], pad_id, device)
            logits = model(input_ids=ids, attention_mask=mask).logits
            lp, tgt, seg_t = gather_target_logprobs(logits, chunk)
            first = np.cumsum([0] + [len(t) for _, t in chunk[:-1]])
            tok_lp = lp.gather(1, tgt[:, None])[:, 0]
            miss = (lp.argmax(dim=-1) != tgt).to(torch.int64)
            sums = torch.zeros(len(rows), dtype=torch.float64, device=device).index_add_(0, seg_t, tok_lp.double())
            misses = torch.zeros(len(rows), dtype=torch.int64, device=device).index_add_(0, seg_t, miss)
            fi = torch.tensor(first, device=device, dtype=torch.long)
            first_lp = tok_lp[fi]
            ranks = (lp[fi] > first_lp[:, None]).sum(dim=1)
            sums, misses, first_lp, ranks = (x.cpu().numpy() for x in (sums, misses, first_lp, ranks))
            first_miss = miss[fi].cpu().numpy()
            for j, r in enumerate(rows):
                logprob[r] = sums[j]
                recalled[r] = misses[j] == 0
                ft_lp[r] = first_lp[j]
                ft_rec[r] = first_miss[j] == 0
                ft_rank[r] = ranks[j]
                if int(r) in want:
                    dists[int(r)] = lp[int(first[j])].cpu()
    scores = TargetScores(logprob=logprob, recalled=recalled, first_token_logprob=ft_lp,
                          first_token_recalled=ft_rec, first_token_rank=ft_rank, n_target_tokens=n_tok)
    return scores, dists


def score_encoded(model, encoded: Sequence[Encoded], pad_id: int = 0, batch_size: int | None = None) -> TargetScores:
    """Score pre-encoded (prompt ids, target ids) pairs (see `forward_scores`)."""
    return forward_scores(model, encoded, pad_id, (), batch_size)[0]


def encode_many(tokenizer, prompts: Sequence[str], targets: Sequence[str]) -> list[Encoded]:
    if len(prompts) != len(targets):
        raise ValueError("prompts and targets differ in length")
    return [encode_prompt_target(tokenizer, p, t) for p, t in zip(prompts, targets)]


def score_targets(
    model, tokenizer, prompts: Sequence[str], targets: Sequence[str], batch_size: int | None = None
) -> TargetScores:
    """Score each target after its prompt: whole-target recall/log p and first-token recall/log p/rank."""
    return score_encoded(model, encode_many(tokenizer, prompts, targets), _pad_id(tokenizer), batch_size)


@torch.no_grad()
def next_token_logprobs(model, tokenizer, prompts: Sequence[str], batch_size: int | None = None) -> torch.Tensor:
    """log p(next token | prompt) at each prompt's last position: (n_prompts, vocab), float32 on CPU."""
    encoded = [encode_prompt(tokenizer, p) for p in prompts]
    device = next(model.parameters()).device
    vocab = int(model.get_output_embeddings().weight.shape[0])
    out = torch.empty((len(prompts), vocab), dtype=torch.float32)
    if not prompts:
        return out
    bs = batch_size or _auto_batch_size(max(len(e) for e in encoded), vocab)
    pad = _pad_id(tokenizer)
    for start in range(0, len(encoded), bs):
        chunk = encoded[start : start + bs]
        ids, mask = _pad_batch(chunk, pad, device)
        logits = model(input_ids=ids, attention_mask=mask).logits
        last = torch.tensor([len(e) - 1 for e in chunk], device=device)
        sel = logits[torch.arange(len(chunk), device=device), last].float()
        out[start : start + len(chunk)] = torch.log_softmax(sel, dim=-1).cpu()
    return out
