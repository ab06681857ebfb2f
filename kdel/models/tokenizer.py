"""Word-level tokenizers for toy models, built with Hugging Face `tokenizers` (DESIGN §3, §12).

Word level by default: each whitespace-separated word is a token, so multi-word names give multi-token
subjects. `whole_entities=True` makes each entity name one token. The saved tokenizer prepends exactly the
special token the training data had (<bos>), so `tok(prompt)` reproduces training ids.
"""

from __future__ import annotations

from collections.abc import Iterable

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<bos>", "<eos>"
UNKNOWN_ANSWER = "<unknown>"  # reserved answer token for the `unknown` deletion objective
SPECIAL_TOKENS = (PAD, UNK, BOS, EOS)


def build_word_tokenizer(lines: Iterable[str], entity_names: Iterable[str] = (), whole_entities: bool = False):
    """A `PreTrainedTokenizerFast` over the words of `lines` (+ entity names, + the reserved answer token)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    entity_names = list(entity_names)
    words: set[str] = set()
    for line in lines:
        words.update(line.split())
    for name in entity_names:
        words.update(name.split())
    words.add(UNKNOWN_ANSWER)
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for w in sorted(words - set(SPECIAL_TOKENS)):
        vocab[w] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, vocab[BOS])]
    )
    if whole_entities:
        tok.add_tokens([AddedToken(n, single_word=True, normalized=False) for n in sorted(set(entity_names))])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token=UNK, padding_side="right"
    )
    return fast
