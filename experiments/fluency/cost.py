"""Cost of one fluency check (kdel.models.fluency.FluencyCheck.after) on a randomly initialised Llama of a given
size, against one plain forward over the held-out text — to size the defaults for real models on CPU.

    python experiments/fluency/cost.py [--layers 24] [--hidden 512] [--intermediate 1408] [--vocab 32000] [--threads 1]

The tokenizer is word level over `--vocab` synthetic words (w0 w1 ...), held-out text and prompt lines are random
word sequences (seeded): the numbers are about cost only, not about fluency.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=24)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--intermediate", type=int, default=1408)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    from transformers import LlamaConfig, LlamaForCausalLM

    from kdel.models.fluency import FluencyCheck, FluencyConfig
    from kdel.models.tokenizer import build_word_tokenizer

    torch.set_num_threads(args.threads)
    rng = random.Random(0)
    words = [f"w{i}" for i in range(args.vocab - 5)]
    tok = build_word_tokenizer([" ".join(words)])
    lines = [" ".join(rng.choices(words, k=rng.randint(12, 40))) for _ in range(400)]
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=args.hidden, intermediate_size=args.intermediate,
                      num_hidden_layers=args.layers, num_attention_heads=8, num_key_value_heads=8,
                      max_position_embeddings=128, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id)
    model = LlamaForCausalLM(cfg).eval()
    n_params = sum(p.numel() for p in model.parameters())
    config = FluencyConfig()
    c0 = time.process_time()
    check = FluencyCheck(model, tok, lines, config, prompt_lines=lines)
    first = time.process_time() - c0
    c0 = time.process_time()
    check.after(model)
    after = time.process_time() - c0
    c0 = time.process_time()
    with torch.no_grad():  # one plain forward over the same held-out tokens, for scale
        for i in range(0, 48, 16):
            ids = [tok(line)["input_ids"] for line in lines[i:i + 16]]
            width = max(map(len, ids))
            x = torch.tensor([s + [tok.pad_token_id] * (width - len(s)) for s in ids])
            model(input_ids=x, attention_mask=(x != tok.pad_token_id).long(), use_cache=False)
    plain = time.process_time() - c0
    print(f"Llama {args.layers} layers, hidden {args.hidden}, vocab {len(tok)}: {n_params / 1e6:.1f}M parameters; "
          f"{len(check.prompts)} prompts x {config.max_new_tokens} new tokens, perplexity on "
          f"{check.before.perplexity_tokens} tokens; threads {args.threads}")
    print(f"CPU s: first check (before) {first:.1f}, one check after an edit {after:.1f}; "
          f"plain forward over 48 lines {plain:.1f}")


if __name__ == "__main__":
    main()
