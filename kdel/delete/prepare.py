"""What a deleting run prepares before its first edit, for `kdel delete` and `kdel audit` alike.

* The corpus (`--corpus`): a text file, `self:N` (N tokens sampled from the model, seeded), or nothing (a KG
  bundle's own corpus; for a facts file, the facts' prompts: thin, key statistics warn). `check_corpus_spec`
  validates the flag before anything loads (a missing file or a malformed `self:N` fails at once);
  `attach` resolves it once (sampling needs the model) and attaches it to the fact table, so every method,
  worker process and Ray actor that receives the table uses the same text. `corpus_record` is what edit.json,
  audit_config.json and the case fingerprints record: the spec (a path, `self:N`, `kg:<hash>`, `facts`), its
  seed, hash, line and token counts (never a made-up path).
* Key statistics: `warm_key_statistics` computes C for every layer the planned edits will use, one pass per
  group of layers (`kdel.delete.covariance.key_statistics_many`: the forward stops at the deepest layer of the
  group), into the cache every edit then reads. Groups keep the float64 sums within `budget_bytes`.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from kdel.errors import UserError

WARM_BUDGET_BYTES = int(os.environ.get("KDEL_KEYSTATS_MEMORY_MB", "2048")) << 20


def corpus_spec_text(spec) -> str | None:
    return None if spec is None or str(spec) == "" else str(spec)


def check_corpus_spec(spec):
    """The `--corpus` value, checked without the model: None, a resolved `Corpus` (a text file), or the
    `self:N` string (resolved once the model is loaded)."""
    from kdel.delete.corpus import Corpus, parse_self_spec, resolve_corpus

    if isinstance(spec, Corpus):
        return spec
    text = corpus_spec_text(spec)
    if text is None:
        return None
    if parse_self_spec(text) is not None:  # raises on a malformed self:N
        return text
    return resolve_corpus(text)


def attach(table, checked, model=None, tokenizer=None, seed: int = 0):
    """A copy of `table` with the corpus `checked` (from `check_corpus_spec`) attached; `table` itself when none.
    Sampling `self:N` needs the model and its tokenizer."""
    from kdel.delete.corpus import Corpus, attach_corpus, resolve_corpus

    if checked is None:
        return table
    corpus = checked if isinstance(checked, Corpus) else resolve_corpus(checked, model, tokenizer, seed)
    copy = dataclasses.replace(table, meta=dict(table.meta))
    attach_corpus(copy, corpus)
    return copy


def corpus_record(table, tokenizer) -> dict:
    """Provenance of the table's corpus: `Corpus.info()` plus the token count of the lines C is computed from
    (`tokens`) and of the held-out lines (`heldout_tokens`), as the tokenizer counts them."""
    from kdel.delete.corpus import corpus_of

    corpus = corpus_of(table)

    def count(lines) -> int:
        return sum(len(tokenizer(line)["input_ids"]) for line in lines)

    return {**corpus.info(), "tokens": count(corpus.key_lines()), "heldout_tokens": count(corpus.heldout_lines())}


def write_self_corpus(table, out_dir: Path) -> Path | None:
    """OUT/corpus.txt with a sampled `self:N` corpus (one line each), so it can be read and reused; None for
    other corpora (a file is the user's own, a KG's is in its bundle)."""
    from kdel.delete.corpus import corpus_of
    from kdel.io import atomic_write_text

    corpus = corpus_of(table)
    if corpus.source != "self":
        return None
    path = Path(out_dir) / "corpus.txt"
    atomic_write_text(path, "".join(line + "\n" for line in corpus.lines))
    return path


def uses_key_statistics(hparams: dict) -> bool:
    """A method whose hyperparameters configure key statistics (ROME, r-ROME, MEMIT: `cov_ridge`)."""
    return "cov_ridge" in (hparams or {})


def key_statistics_layers(method, ctx, requests) -> set[int]:
    """Every layer whose key statistics `method` will read for `requests` (none for methods without them)."""
    hp = dataclasses.asdict(method.hparams) if dataclasses.is_dataclass(method.hparams) else {}
    if not uses_key_statistics(hp):
        return set()
    return {int(layer) for r in requests for layer in method.layers_of(ctx, r)}


def warm_key_statistics(adapter, tokenizer, table, layers, cache_dir, budget_bytes: int = WARM_BUDGET_BYTES,
                        batch_size: int = 64) -> dict[int, dict]:
    """C for every layer of `layers` into `cache_dir` (and the in-memory cache), one streamed pass per group of
    layers whose d×d float64 sums fit in `budget_bytes`; returns each layer's `KeyStats.info()`."""
    from kdel.delete.covariance import key_statistics_many

    layers = sorted(set(int(x) for x in layers))
    groups: list[list[int]] = []
    used = 0
    for layer in layers:
        size = adapter.d_mlp(layer) ** 2 * 8
        if groups and used + size <= budget_bytes:
            groups[-1].append(layer)
            used += size
        else:
            groups.append([layer])
            used = size
    info = {}
    for group in groups:
        stats = key_statistics_many(adapter, tokenizer, table, group, cache_dir, batch_size=batch_size)
        info.update({layer: s.info() for layer, s in stats.items()})
        del stats
    return info


def resolve_layer_arg(value) -> int | str | None:
    """`--layer`: 'auto', a layer index, or None (the method's own default)."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise UserError(f"--layer must be auto or a layer index >= 0, got {value}")
        return value
    text = str(value).strip()
    if text == "auto":
        return "auto"
    try:
        layer = int(text)
    except ValueError:
        raise UserError(f"--layer must be auto or a layer index, got {value!r}") from None
    return resolve_layer_arg(layer)
