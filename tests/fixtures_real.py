""""Real-looking" Hugging Face models for the real-model path, built in the test (nothing is downloaded).

Each model is an ordinary HF causal-LM directory (safetensors + tokenizer, no kdel_model.json) that kdel did
not train: a tiny random config of GPT-2, Llama or GPT-NeoX, briefly fine-tuned with a plain torch loop on a
handful of facts so it recalls them. Tokenizers mimic the real ones:
- gpt2: byte-level BPE trained here with `tokenizers` (no prefix space, no BOS, no pad token: like GPT-2's);
- llama: SentencePiece-style BPE (Metaspace "▁", BOS prepended, like Llama's);
- gpt_neox: kdel's word-level tokenizer (so an out-of-vocabulary target exists).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

FAMILIES = ("gpt2", "llama", "gpt_neox")

# relation -> (training templates, held-out paraphrase template); {s} subject, {o} object last
RELATIONS = {
    "lives_in": (["{s} lives in {o}", "The home of {s} is in {o}"], "{s} resides in {o}"),
    "works_as": (["{s} works as a {o}", "By trade {s} is a {o}"], "The job of {s} is a {o}"),
}
FACTS = [  # (subject, relation, object); shared objects give same_object probes
    ("Maria Lopez", "lives_in", "Paris"),
    ("John Smith", "lives_in", "Rome"),
    ("Ann Lee", "lives_in", "Berlin"),
    ("Peter Brown", "lives_in", "Paris"),
    ("Lucy Grant", "lives_in", "Madrid"),
    ("Omar Khan", "lives_in", "Vienna"),
    ("Maria Lopez", "works_as", "doctor"),
    ("John Smith", "works_as", "baker"),
    ("Ann Lee", "works_as", "pilot"),
    ("Peter Brown", "works_as", "lawyer"),
    ("Lucy Grant", "works_as", "doctor"),
    ("Omar Khan", "works_as", "farmer"),
]
FILLER = [  # extra text in the --corpus file (more tokens for the key statistics)
    "the weather in the city was cold and grey",
    "a doctor and a baker met on a train to the coast",
    "many people travel by train in the morning",
    "the old bridge over the river is made of stone",
    "she read a book about farmers and pilots",
    "the market opens early on a sunny day",
]


def _cut(template: str, subject: str) -> str:
    return template.replace("{s}", subject).split("{o}")[0].rstrip()


def fact_rows(with_optional: bool = True) -> list[dict]:
    """Facts-file rows; `with_optional=False` gives only the required subject/prompt/target."""
    rows = []
    for i, (s, r, o) in enumerate(FACTS):
        train, para = RELATIONS[r]
        row = {"subject": s, "prompt": _cut(train[0], s), "target": o}
        if with_optional:
            row.update(relation=r, paraphrases=[_cut(para, s)], popularity=float(1 + (i * 7) % 5))
        rows.append(row)
    return rows


def training_sentences() -> list[str]:
    out = []
    for s, r, o in FACTS:
        train, para = RELATIONS[r]
        out += [t.replace("{s}", s).replace("{o}", o) for t in (*train, para)]
    return out


def finetune_texts(seed: int = 0) -> list[str]:
    """Each training sentence alone and after another corpus sentence, so the model (like a pretrained one)
    copes with context before a prompt: ROME/MEMIT compute keys after context prefixes from the corpus."""
    import random

    rng = random.Random(seed)
    sentences, pool = training_sentences(), corpus_lines()
    return sentences + [f"{rng.choice([p for p in pool if p != s])} {s}" for s in sentences]


def corpus_lines() -> list[str]:
    return training_sentences() + FILLER


def write_facts(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_corpus(path: Path) -> Path:
    path.write_text("\n".join(corpus_lines()) + "\n", encoding="utf-8")
    return path


# -- tokenizers ---------------------------------------------------------------------------------------
def gpt2_style_tokenizer(lines: list[str], vocab_size: int = 380):
    """Byte-level BPE trained on `lines`: space-sensitive, ' Paris' != 'Paris', no BOS, no pad token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    eot = "<|endoftext|>"
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[eot], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(lines, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=eot, eos_token=eot, unk_token=eot)


def llama_style_tokenizer(lines: list[str], vocab_size: int = 150):
    """SentencePiece-style BPE: spaces become '▁', a BOS token is prepended, byte fallback-free."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    unk, bos, eos = "<unk>", "<s>", "</s>"
    tok = Tokenizer(models.BPE(unk_token=unk))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[unk, bos, eos], show_progress=False)
    tok.train_from_iterator(lines, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, tok.token_to_id(bos))]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=eos, unk_token=unk)


def word_tokenizer(lines: list[str]):
    from kdel.models.tokenizer import build_word_tokenizer

    return build_word_tokenizer(lines)


# -- models -------------------------------------------------------------------------------------------
def build_model(family: str, vocab: int, tok, n_layers: int = 4, d_model: int = 32, seed: int = 0, kv_heads: int = 2):
    """A tiny randomly initialised causal LM of `family` (gpt2 | llama | gpt_neox) with 4 attention heads."""
    from transformers import (
        GPT2Config,
        GPT2LMHeadModel,
        GPTNeoXConfig,
        GPTNeoXForCausalLM,
        LlamaConfig,
        LlamaForCausalLM,
    )

    torch.manual_seed(seed)
    ids = dict(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    if getattr(tok, "pad_token_id", None) is not None:
        ids["pad_token_id"] = tok.pad_token_id
    if family == "gpt2":
        return GPT2LMHeadModel(GPT2Config(vocab_size=vocab, n_positions=64, n_embd=d_model, n_layer=n_layers,
                                          n_head=4, **ids))
    if family == "llama":
        return LlamaForCausalLM(LlamaConfig(
            vocab_size=vocab, hidden_size=d_model, intermediate_size=4 * d_model, num_hidden_layers=n_layers,
            num_attention_heads=4, num_key_value_heads=kv_heads, max_position_embeddings=64, **ids))
    if family == "gpt_neox":
        return GPTNeoXForCausalLM(GPTNeoXConfig(
            vocab_size=vocab, hidden_size=d_model, intermediate_size=4 * d_model, num_hidden_layers=n_layers,
            num_attention_heads=4, max_position_embeddings=64, **ids))
    raise ValueError(family)


def finetune(model, tok, sentences: list[str], steps: int = 300, lr: float = 1e-2, seed: int = 0) -> float:
    """Plain full-batch LM fine-tuning on `sentences` (loss on every real token). Returns the final loss."""
    torch.manual_seed(seed)
    encoded = [tok(s)["input_ids"] for s in sentences]
    width = max(map(len, encoded))
    ids = torch.zeros((len(encoded), width), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, e in enumerate(encoded):
        ids[i, : len(e)] = torch.tensor(e)
        mask[i, : len(e)] = 1
    labels = ids.masked_fill(mask == 0, -100)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    loss = torch.tensor(0.0)
    for _ in range(steps):
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return float(loss.detach())


@dataclass
class RealModel:
    family: str
    path: Path
    n_layers: int
    final_loss: float


def make_real_model(family: str, out: Path, steps: int = 120) -> RealModel:
    """Build, fine-tune and save a model of `family` with its tokenizer (no kdel_model.json)."""
    lines = corpus_lines()
    if family == "gpt2":
        tok = gpt2_style_tokenizer(lines)
    elif family == "llama":
        tok = llama_style_tokenizer(lines)
    else:
        tok = word_tokenizer(lines)
    model = build_model(family, len(tok), tok)
    loss = finetune(model, tok, finetune_texts(), steps=steps)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return RealModel(family, out, model.config.num_hidden_layers, loss)


def target_prob(model_dir: Path, prompt: str, target: str) -> float:
    """p(target | prompt) of a saved model, loaded with plain transformers (not kdel's loader)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from kdel.models.scoring import score_targets

    model = AutoModelForCausalLM.from_pretrained(str(model_dir))
    model.eval()
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    return float(score_targets(model, tok, [prompt], [target]).prob[0])


def cached_real_model(family: str, cache_root: Path) -> RealModel:
    """`make_real_model`, cached on disk under `cache_root`, keyed by this file and the library versions
    (KDEL_TEST_RETRAIN=1 rebuilds). The models are tiny (< 1 MB) and take seconds to build."""
    import hashlib
    import os
    import shutil

    import tokenizers
    import transformers

    key_src = Path(__file__).read_bytes() + f"{torch.__version__}|{transformers.__version__}|{tokenizers.__version__}".encode()
    key = hashlib.sha256(key_src).hexdigest()[:12]
    out = cache_root / f"{family}-{key}"
    meta = out / "real_model.json"
    if meta.is_file() and not os.environ.get("KDEL_TEST_RETRAIN"):
        m = json.loads(meta.read_text())
        return RealModel(family, out, m["n_layers"], m["final_loss"])
    tmp = cache_root / f".{family}-{key}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    rm = make_real_model(family, tmp)
    (tmp / "real_model.json").write_text(json.dumps({"n_layers": rm.n_layers, "final_loss": rm.final_loss}))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return RealModel(family, out, rm.n_layers, rm.final_loss)
