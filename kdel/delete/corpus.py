"""The text behind key statistics and held-out perplexity: where it comes from and how it is split.

A `Corpus` is a list of text lines and its provenance:
  * `file`  — a text file given with `--corpus PATH` (one sentence or passage a line);
  * `self`  — `--corpus self:N`: N tokens sampled from the model itself, a stand-in for pretraining text
    when none is at hand (see `sample_self_corpus`);
  * `kg`    — a KG bundle's training corpus (toy models);
  * `facts` — nothing better known: every prompt + target of the facts (thin; key statistics warn).

Split (fixed and deterministic): line i is *held out* when `i % heldout_every == heldout_every - 1`
(every 10th line by default). Held-out lines are never used for C; they are the text on which fluency
checks measure perplexity before and after an edit (kdel.models.fluency). A corpus of fewer than
`heldout_every` lines holds nothing out; the facts' own prompts are never split (they are the edited facts,
not neutral text).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch

from kdel.errors import UserError
from kdel.io import sha256_text

HELDOUT_EVERY = 10
SELF_PREFIX = "self:"
SELF_LENGTH = 64  # tokens per sampled sequence (at most; shorter when the model ends it or its context is short)
SELF_BATCH = 16  # sequences sampled together


@dataclass(frozen=True)
class Corpus:
    lines: tuple[str, ...]
    source: str  # "file" | "self" | "kg" | "facts"
    spec: str  # what was asked for: a resolved path, "self:N", "kg:<hash>", "facts"
    seed: int | None = None  # for `self`
    heldout_every: int = HELDOUT_EVERY  # 0: nothing held out

    @cached_property
    def hash(self) -> str:
        """sha256 of the lines joined by newlines (the same hash a facts table records for --corpus)."""
        return sha256_text("\n".join(self.lines))

    @property
    def thin(self) -> bool:
        return self.source == "facts"

    def is_heldout(self, index: int) -> bool:
        k = self.heldout_every
        return k > 0 and index % k == k - 1

    def key_lines(self) -> list[str]:
        """The lines C is computed from (every line not held out)."""
        return [line for i, line in enumerate(self.lines) if not self.is_heldout(i)]

    def heldout_lines(self) -> list[str]:
        """The lines kept out of C, for held-out perplexity."""
        return [line for i, line in enumerate(self.lines) if self.is_heldout(i)]

    def info(self) -> dict:
        """Provenance for edit records and case files (token counts are added by whoever tokenizes)."""
        held = len(self.heldout_lines())
        return {"source": self.source, "spec": self.spec, "seed": self.seed, "sha256": self.hash,
                "lines": len(self.lines), "key_lines": len(self.lines) - held, "heldout_lines": held,
                "heldout_every": self.heldout_every}


def _clean(lines) -> tuple[str, ...]:
    return tuple(line for line in lines if line.strip())


def corpus_of(table) -> Corpus:
    """The corpus a fact table carries (attached by `attach_corpus`, a KG's corpus, a --corpus file), else
    the facts' own prompts (thin)."""
    spec = (table.meta or {}).get("corpus_spec")
    if table.corpus and isinstance(spec, dict):
        return Corpus(_clean(table.corpus), spec["source"], spec["spec"], spec.get("seed"),
                      int(spec.get("heldout_every", HELDOUT_EVERY)))
    if table.corpus:
        if table.source == "kg":
            return Corpus(_clean(table.corpus), "kg", f"kg:{table.source_hash[:16]}")
        return Corpus(_clean(table.corpus), "file", str(table.meta.get("corpus_path", "--corpus file")))
    return Corpus(_clean(table.training_prompts()), "facts", "facts", heldout_every=0)


def attach_corpus(table, corpus: Corpus | None) -> None:
    """Make `corpus` the table's corpus (key statistics, held-out text, context prefixes). The corpus hash
    joins the table's identity (`table.key_text()`), so cached cases of another corpus are never reused."""
    if corpus is None:
        return
    table.corpus = list(corpus.lines)
    table.meta["corpus_hash"] = corpus.hash
    table.meta["corpus_spec"] = {"source": corpus.source, "spec": corpus.spec, "seed": corpus.seed,
                                 "heldout_every": corpus.heldout_every}


def parse_self_spec(spec: str) -> int | None:
    """N of 'self:N', None when `spec` is not a self spec; a malformed one is a user error."""
    if not spec.startswith(SELF_PREFIX):
        return None
    raw = spec[len(SELF_PREFIX):].replace("_", "")
    if not raw.isdigit() or int(raw) <= 0:
        raise UserError(f"--corpus {spec}: self:N needs a positive whole number of tokens (e.g. self:20000)")
    return int(raw)


def resolve_corpus(spec, model=None, tokenizer=None, seed: int = 0) -> Corpus | None:
    """`--corpus` as given: None (no corpus), 'self:N' (sampled from `model`, seeded) or a text file path."""
    if spec is None or str(spec) == "":
        return None
    text = str(spec)
    n = parse_self_spec(text)
    if n is not None:
        if model is None or tokenizer is None:
            raise ValueError("resolve_corpus: self:N needs the model and its tokenizer")
        lines = sample_self_corpus(model, tokenizer, n, seed)
        return Corpus(tuple(lines), "self", f"{SELF_PREFIX}{n}", seed)
    path = Path(text)
    if not path.is_file():
        raise UserError(f"corpus file {path} does not exist (or is not a file); pass a text file or self:N")
    try:
        lines = _clean(path.read_text(encoding="utf-8").splitlines())
    except UnicodeDecodeError:
        raise UserError(f"corpus file {path} is not UTF-8 text") from None
    if not lines:
        raise UserError(f"corpus file {path} has no non-empty line")
    return Corpus(lines, "file", str(path.resolve()))


def _start_tokens(tokenizer, vocab: int, rows: int, gen: torch.Generator) -> tuple[torch.Tensor, bool]:
    """(rows, 1) start tokens and whether they belong to the text: BOS when the tokenizer has one (not
    text), else a uniformly random non-special token (the first word of the line)."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is not None:
        return torch.full((rows, 1), int(bos), dtype=torch.long), False
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    pool = torch.tensor([i for i in range(vocab) if i not in special], dtype=torch.long)
    return pool[torch.randint(len(pool), (rows, 1), generator=gen)], True


def sample_self_corpus(model, tokenizer, n_tokens: int, seed: int, length: int = SELF_LENGTH,
                       batch_size: int = SELF_BATCH) -> list[str]:
    """About `n_tokens` tokens of the model's own text, as lines (one sampled sequence a line).

    Each sequence starts at BOS (the model's unconditional distribution: what it was trained to produce at
    the start of a document) — or at a uniformly random non-special token when the tokenizer has no BOS —
    and continues for up to `length` tokens, sampled at temperature 1 from the full softmax (no top-k:
    greedy or truncated sampling would repeat a few high-probability phrases and under-represent the
    key directions that rarer text excites). A sequence ends at EOS. Tokens are drawn from a CPU generator
    seeded with `seed`, so the same seed gives the same text (on the same device and weights).
    """
    from kdel.models.generation import extend, room, sampler

    gen = torch.Generator().manual_seed(int(seed))
    eos = getattr(tokenizer, "eos_token_id", None)
    # special tokens other than EOS (padding, unknown, BOS) are not text: never sampled
    banned = [i for i in (getattr(tokenizer, "all_special_ids", None) or []) if i != eos]
    choose = sampler(gen, temperature=1.0, banned=banned)
    vocab = int(model.get_input_embeddings().weight.shape[0])
    steps = room(model, 1, length)
    if steps < 1:
        raise UserError("the model's context is too short to sample a self corpus")
    seqs: list[list[int]] = []
    total = 0
    was_training = model.training
    model.eval()
    try:
        while total < n_tokens:
            start, keep_start = _start_tokens(tokenizer, vocab, batch_size, gen)
            new = extend(model, start, steps, choose, stop_at=eos)
            if keep_start:
                new = torch.cat([start, new], dim=1)
            got = 0
            for row in new.tolist():
                if eos is not None and eos in row:
                    row = row[: row.index(eos)]
                row = row[: n_tokens - total]
                if row:
                    seqs.append(row)
                    total += len(row)
                    got += len(row)
            if got == 0:
                raise UserError("the model ends every sampled sequence at once: --corpus self:N cannot sample text")
    finally:
        model.train(was_training)
    lines = []
    for row in seqs:
        text = " ".join(tokenizer.decode(row, skip_special_tokens=True).split("\n")).replace("\r", " ").strip()
        if text:
            lines.append(text)
    return lines
