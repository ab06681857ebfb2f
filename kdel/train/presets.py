"""GPT-2 size presets for toy models trained from scratch (DESIGN §3).

Parameter counts are measured on the default KG (200 entities, 50 relations: a word vocabulary of 461
tokens, tied input/output embeddings, 128 positions); the vocabulary part grows with the KG.

| preset | layers | d_model | heads | MLP width | params (default KG) | default peak lr |
|--------|--------|---------|-------|-----------|---------------------|-----------------|
| tiny   | 4      | 128     | 4     | 512       | 868,736             | 3e-3            |
| small  | 6      | 256     | 8     | 1024      | 4,889,856           | 1e-3            |
| base   | 8      | 512     | 8     | 2048      | 25,521,664          | 5e-4            |
"""

from __future__ import annotations

from dataclasses import dataclass

from kdel.errors import UserError

N_POSITIONS = 128  # room for training sentences plus the context prefixes later stages prepend


@dataclass(frozen=True)
class Preset:
    name: str
    n_layer: int
    n_embd: int
    n_head: int
    lr: float  # default peak learning rate for this size

    def gpt2_config(self, vocab_size: int, bos_id: int, eos_id: int, pad_id: int):
        from transformers import GPT2Config

        return GPT2Config(
            vocab_size=vocab_size,
            n_positions=N_POSITIONS,
            n_embd=self.n_embd,
            n_layer=self.n_layer,
            n_head=self.n_head,
            n_inner=4 * self.n_embd,
            resid_pdrop=0.0,  # memorization: dropout only slows it down
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            bos_token_id=bos_id,
            eos_token_id=eos_id,
            pad_token_id=pad_id,
            tie_word_embeddings=True,
        )


PRESETS: dict[str, Preset] = {
    "tiny": Preset("tiny", n_layer=4, n_embd=128, n_head=4, lr=3e-3),
    "small": Preset("small", n_layer=6, n_embd=256, n_head=8, lr=1e-3),
    "base": Preset("base", n_layer=8, n_embd=512, n_head=8, lr=5e-4),
}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise UserError(f"unknown preset {name!r}: use one of {', '.join(PRESETS)}") from None
