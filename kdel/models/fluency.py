"""Fluency and general ability of a model, before and after an edit (DESIGN §13).

Two measures, both batched, both cheap enough for every audit case:
  * **generation entropy** (ROME's fluency measure): greedy continuations of a fixed set of neutral prompts;
    for each text (prompt + continuation, split into words and punctuation) the entropies in bits of its
    bigram and trigram frequency distributions, weighted 2/3 and 4/3 and averaged (arithmetic mean of the
    two weighted terms, as in ROME's evaluation); the score is the mean over prompts. A model that repeats
    itself ("a day, a day, a day") scores low. Greedy decoding makes the score deterministic.
  * **held-out perplexity**: exp(mean next-token negative log-likelihood) over the held-out lines of the corpus
    (kdel.delete.corpus: every 10th line, never used for key statistics), every token after the first of each
    line predicted, up to `heldout_tokens` predicted tokens.

An edit is flagged `wrecked` when perplexity rises more than `max_ppl_ratio`× or generation entropy falls by
more than `max_entropy_drop` of its value before the edit (defaults, and the measurements behind them, in
docs/fluency.md).

Prompts: English neutral prompts for models whose tokenizer encodes them without an unknown token; for toy
models (word-level vocabularies of a KG) the first words of held-out corpus lines, which are in-vocabulary.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field

import torch

from kdel.models.generation import extend, greedy, max_positions, room

DEFAULT_PROMPTS = (
    "The",
    "My favourite food is",
    "In the morning I usually",
    "The history of the city",
    "Once upon a time there was",
    "Scientists have discovered that",
    "The best way to learn a language is",
    "Yesterday we went to",
    "The weather today is",
    "Last year the company",
)
NGRAM_WEIGHTS = ((2, 2 / 3), (3, 4 / 3))  # (n, weight): ROME's bigram/trigram weighting
MAX_PPL_RATIO = 2.0
MAX_ENTROPY_DROP = 0.3
_WORD = re.compile(r"\w+|[^\w\s]")


@dataclass(frozen=True)
class FluencyConfig:
    prompts: tuple[str, ...] | None = None  # None: DEFAULT_PROMPTS if in-vocabulary, else corpus line starts
    max_new_tokens: int = 40
    heldout_tokens: int = 1000  # predicted tokens of held-out text (at most)
    batch_size: int = 16
    max_ppl_ratio: float = MAX_PPL_RATIO
    max_entropy_drop: float = MAX_ENTROPY_DROP  # relative to the entropy before the edit
    corpus_prompts: int = 10  # toy models: how many corpus lines give a prompt
    prompt_words: int = 2  # toy models: words taken from the start of each line


# -- n-gram entropy -----------------------------------------------------------------------------------
def words(text: str) -> list[str]:
    """Words and punctuation marks, in order."""
    return _WORD.findall(text)


def ngram_entropy(tokens: list[str], n: int) -> float:
    """Entropy in bits of the frequency distribution of the text's n-grams (0 when it has none)."""
    counts = Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))
    total = sum(counts.values())
    return -sum(c / total * math.log2(c / total) for c in counts.values()) if total else 0.0


def weighted_ngram_entropy(text: str) -> float:
    """Mean of 2/3·H(bigrams) and 4/3·H(trigrams) of one text."""
    toks = words(text)
    return sum(w * ngram_entropy(toks, n) for n, w in NGRAM_WEIGHTS) / len(NGRAM_WEIGHTS)


def generation_entropy(texts: list[str]) -> float:
    return sum(weighted_ngram_entropy(t) for t in texts) / len(texts) if texts else float("nan")


# -- prompts and generations --------------------------------------------------------------------------
def _in_vocabulary(tokenizer, text: str) -> bool:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    unk = getattr(tokenizer, "unk_token_id", None)
    return bool(ids) and (unk is None or unk not in ids)


def choose_prompts(tokenizer, lines: list[str] | None = None, n: int = 10, n_words: int = 2) -> list[str]:
    """DEFAULT_PROMPTS when the tokenizer encodes every one of them; else the first `n_words` words of up to
    `n` of `lines` (distinct, in-vocabulary; taken from evenly spaced lines first)."""
    if all(_in_vocabulary(tokenizer, p) for p in DEFAULT_PROMPTS):
        return list(DEFAULT_PROMPTS)
    lines = [ln for ln in (lines or []) if len(ln.split()) > n_words]
    step = max(1, len(lines) // max(n, 1))
    out: list[str] = []
    for i in sorted(range(len(lines)), key=lambda i: (i % step, i)):  # evenly spaced first, then their neighbours
        p = " ".join(lines[i].split()[:n_words])
        if p not in out and _in_vocabulary(tokenizer, p):
            out.append(p)
        if len(out) == n:
            break
    return out


@torch.no_grad()
def greedy_generations(model, tokenizer, prompts: list[str], max_new_tokens: int, batch_size: int = 16) -> list[str]:
    """prompt + greedy continuation (special tokens dropped) for each prompt, batched by prompt length."""
    encoded = [list(tokenizer(p)["input_ids"]) for p in prompts]
    texts: list[str | None] = [None] * len(prompts)
    by_len: dict[int, list[int]] = {}
    for i, ids in enumerate(encoded):
        by_len.setdefault(len(ids), []).append(i)
    for length, rows in sorted(by_len.items()):
        steps = room(model, length, max_new_tokens)
        for start in range(0, len(rows), batch_size):
            chunk = rows[start:start + batch_size]
            ids = torch.tensor([encoded[i] for i in chunk], dtype=torch.long)
            new = extend(model, ids, steps, greedy) if steps else torch.zeros((len(chunk), 0), dtype=torch.long)
            for i, cont in zip(chunk, new.tolist()):
                texts[i] = tokenizer.decode(encoded[i] + cont, skip_special_tokens=True)
    return [t or "" for t in texts]


# -- held-out perplexity ------------------------------------------------------------------------------
@torch.no_grad()
def heldout_perplexity(model, tokenizer, lines: list[str], max_tokens: int = 4000, batch_size: int = 16,
                       max_batch_logits: int = 1 << 25) -> tuple[float, int]:
    """(exp of the mean next-token NLL, number of predicted tokens) over `lines`, taken in order until
    `max_tokens` tokens are predicted; (nan, 0) when there is nothing to predict."""
    from kdel.models.scoring import _pad_batch, _pad_id

    limit = max_positions(model) or 1024
    seqs, total = [], 0
    for line in lines:
        ids = list(tokenizer(line)["input_ids"])[:limit]
        if len(ids) < 2:
            continue
        ids = ids[: max_tokens - total + 1]
        seqs.append(ids)
        total += len(ids) - 1
        if total >= max_tokens:
            break
    if not seqs:
        return float("nan"), 0
    device = next(model.parameters()).device
    vocab = int(model.get_output_embeddings().weight.shape[0])
    max_rows_tokens = max(1, max_batch_logits // vocab)
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    batches, chunk = [], []
    for i in order:  # length-sorted: the newest row is the widest
        if chunk and (len(chunk) >= batch_size or (len(chunk) + 1) * len(seqs[i]) > max_rows_tokens):
            batches.append(chunk)
            chunk = []
        chunk.append(seqs[i])
    batches.append(chunk)
    nll, count = 0.0, 0
    was_training = model.training
    model.eval()
    try:
        for chunk in batches:
            ids, mask = _pad_batch(chunk, _pad_id(tokenizer), device)
            logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits[:, :-1].float()
            targets = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
            nll += float(torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                                           ignore_index=-100, reduction="sum"))
            count += int((targets != -100).sum())
    finally:
        model.train(was_training)
    return math.exp(nll / count), count


# -- the measurement and the verdict ------------------------------------------------------------------
@dataclass
class FluencyScore:
    entropy: float  # mean weighted n-gram entropy of the generations, bits
    perplexity: float  # on held-out text (nan when there is none)
    perplexity_tokens: int
    texts: list[str] = field(default_factory=list)  # the generations (prompt + continuation)

    def info(self, prefix: str = "") -> dict:
        return {f"{prefix}entropy": self.entropy, f"{prefix}perplexity": self.perplexity,
                f"{prefix}perplexity_tokens": self.perplexity_tokens}


def measure_fluency(model, tokenizer, prompts: list[str], heldout: list[str],
                    config: FluencyConfig = FluencyConfig()) -> FluencyScore:
    texts = greedy_generations(model, tokenizer, prompts, config.max_new_tokens, config.batch_size)
    ppl, n = heldout_perplexity(model, tokenizer, heldout, config.heldout_tokens, config.batch_size)
    return FluencyScore(generation_entropy(texts), ppl, n, texts)


def compare_fluency(before: FluencyScore, after: FluencyScore, config: FluencyConfig = FluencyConfig()) -> dict:
    """Before/after numbers, their ratio and relative drop, and the `wrecked` flag with its reasons."""
    ratio = after.perplexity / before.perplexity if before.perplexity_tokens and after.perplexity_tokens else float("nan")
    drop = (before.entropy - after.entropy) / before.entropy if before.entropy > 0 else float("nan")
    reasons = []
    if not ratio <= config.max_ppl_ratio and not math.isnan(ratio):
        reasons.append("perplexity")
    if drop > config.max_entropy_drop:
        reasons.append("entropy")
    return {**before.info("fluency_before_"), **after.info("fluency_after_"),
            "fluency_ppl_ratio": ratio, "fluency_entropy_drop": drop,
            "fluency_wrecked": bool(reasons), "fluency_wrecked_by": reasons}


class FluencyCheck:
    """What an audit keeps per model: prompts, held-out text and the scores before any edit; `after(model)`
    measures the edited model and compares."""

    def __init__(self, model, tokenizer, heldout: list[str], config: FluencyConfig = FluencyConfig(),
                 prompt_lines: list[str] | None = None):
        self.tokenizer, self.config, self.heldout = tokenizer, config, list(heldout)
        self.prompts = list(config.prompts) if config.prompts else choose_prompts(
            tokenizer, prompt_lines if prompt_lines is not None else self.heldout, config.corpus_prompts,
            config.prompt_words)
        self.before = measure_fluency(model, tokenizer, self.prompts, self.heldout, config)

    def after(self, model) -> dict:
        return compare_fluency(self.before, measure_fluency(model, self.tokenizer, self.prompts, self.heldout,
                                                            self.config), self.config)

    def info(self) -> dict:
        return {"fluency_prompts": list(self.prompts), "fluency_heldout_lines": len(self.heldout),
                "fluency_max_ppl_ratio": self.config.max_ppl_ratio,
                "fluency_max_entropy_drop": self.config.max_entropy_drop}
