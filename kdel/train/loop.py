"""Train a GPT-2 from scratch on a KG's corpus until it memorizes the facts (DESIGN §3).

Data: every corpus line as `<bos> sentence <eos>`, loss on every token (optionally up-weighting the
object's tokens). AdamW with linear warm-up and cosine decay. Every `eval_every` steps the whole-object
recall over all facts × training templates is measured; training stops once it reaches the target, or
at `max_steps`. Seeded and deterministic on CPU (same seed and threads -> identical weights).

Outputs follow kdel's one output rule (kdel.outputs): `out_dir` is missing, empty or a model kdel trained,
never the KG; it is written whole in one rename. Training that diverges (a non-finite loss or weight) stops
with `StageFailed` and writes nothing. train_report.json records the code version and environment
(`provenance`, kdel.provenance); kdel_model.json, the model's identity (format, KG hash, preset, tokenizer),
does not: it is copied into every edited model and must not change with the commit.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from kdel.errors import StageFailed, UserError
from kdel.train.presets import get_preset
from kdel.train.report import RecallProbe, TrainReport, evaluate_recall, quick_recall

MODEL_FORMAT = "kdel-model/1"
REPORT_FILE = "train_report.json"
EVAL_MARGIN = 0.05  # auto evaluation starts when the in-pass recall is this close to the target


@dataclass
class TrainConfig:
    preset: str = "tiny"
    seed: int = 0
    target_recall: float = 0.99
    max_steps: int = 20_000
    lr: float | None = None  # peak learning rate; None = the preset's
    min_lr_ratio: float = 0.1  # the cosine decays to lr * min_lr_ratio at `decay_steps`, then stays there
    decay_steps: int | None = None  # None = decay_epochs epochs
    decay_epochs: float = 30.0
    warmup: int | None = None  # warm-up steps; None = min(100, 2 epochs)
    batch_size: int = 64
    weight_decay: float = 0.0
    object_weight: float = 3.0  # loss weight of the object's tokens relative to every other token
    eval_every: int | None = None  # steps between recall checks; None = each epoch once near the target
    device: str = "cpu"
    threads: int | None = 1  # torch threads (kdel.runtime.set_threads); None = leave as is
    whole_entities: bool = False  # one token per entity name
    n_bins: int = 5  # popularity bins in the report

    def validate(self) -> None:
        get_preset(self.preset)
        if not 0.0 < self.target_recall <= 1.0:
            raise UserError(f"--target-recall must be in (0, 1], got {self.target_recall}")
        if self.max_steps < 1:
            raise UserError(f"--max-steps must be >= 1, got {self.max_steps}")
        if self.batch_size < 1:
            raise UserError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.lr is not None and not (math.isfinite(self.lr) and self.lr > 0):
            raise UserError(f"--lr must be a finite number > 0, got {self.lr}")
        if self.seed < 0:
            raise UserError(f"--seed must be >= 0, got {self.seed}")


def lr_factor(step: int, warmup: int, decay_steps: int, min_ratio: float) -> float:
    """Multiplier of the peak LR at `step`: linear warm-up, then cosine down to `min_ratio`."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if step >= decay_steps:
        return min_ratio
    span = max(1, decay_steps - warmup)
    progress = (step - warmup) / span
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def load_kg(kg_or_dir):
    """A KnowledgeGraph from an object or a bundle directory (UserError if missing or broken)."""
    if not isinstance(kg_or_dir, (str, Path)):
        return kg_or_dir
    path = Path(kg_or_dir)
    if not path.exists():
        raise UserError(f"KG directory {path} does not exist")
    if not path.is_dir():
        raise UserError(f"KG path {path} is not a directory (expected a kdel KG bundle)")
    from synth_kg import KnowledgeGraph

    try:
        return KnowledgeGraph.load(path)
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - any loader failure here is a broken bundle
        raise UserError(f"cannot load the KG bundle {path}: {type(e).__name__}: {e}") from None


def _diverged(step: int, loss: float) -> StageFailed:
    what = f"loss {loss}" if not math.isfinite(loss) else "a weight is not finite"
    return StageFailed(f"training diverged at step {step} ({what}); try a lower --lr")


def _weights_finite(model) -> bool:
    import torch

    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


def _object_token_counts(tokenizer, table) -> dict[str, int]:
    """Sentence text -> number of object tokens at its end, for every fact × training template."""
    out = {}
    for f in table.facts:
        n = len(tokenizer(" " + f.target, add_special_tokens=False)["input_ids"])
        for p in f.prompts:
            out[f"{p} {f.target}"] = n
    return out


def encode_corpus(tokenizer, lines: list[str], table, object_weight: float):
    """Padded training tensors for `lines`, each `<bos> line <eos>`.

    Returns (ids [N, L], labels [N, L] with -100 on padding, object mask [N, L] marking the object's
    tokens of sentences that state a fact with a training template, loss weights [N, L] or None).
    """
    import torch

    eos = tokenizer.eos_token_id
    seqs = [list(tokenizer(line)["input_ids"]) + [eos] for line in lines]
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), tokenizer.pad_token_id, dtype=torch.long)
    labels = torch.full((len(seqs), width), -100, dtype=torch.long)
    obj = torch.zeros((len(seqs), width), dtype=torch.bool)
    counts = _object_token_counts(tokenizer, table)
    for i, (line, s) in enumerate(zip(lines, seqs)):
        ids[i, : len(s)] = torch.tensor(s)
        labels[i, : len(s)] = torch.tensor(s)
        text = line.rstrip()
        text = text[:-2] if text.endswith(" .") else text
        n = counts.get(text)
        if n:
            end = len(tokenizer(text)["input_ids"])  # the object ends the sentence, before "." and eos
            obj[i, end - n : end] = True
    weights = None
    if object_weight != 1.0:
        weights = (labels != -100).float()
        weights[obj] = object_weight
    return ids, labels, obj, weights


def _loss(model, ids, labels, obj, weights):
    """(mean loss, per-sequence 'object recalled' flags from this forward pass, has-object flags)."""
    import torch.nn.functional as F

    logits = model(input_ids=ids, attention_mask=(labels != -100).long()).logits[:, :-1]
    tgt = labels[:, 1:]
    flat = logits.reshape(-1, logits.shape[-1])
    if weights is None:
        loss = F.cross_entropy(flat, tgt.reshape(-1), ignore_index=-100)
    else:
        w = weights[:, 1:].reshape(-1)
        per_tok = F.cross_entropy(flat, tgt.reshape(-1), ignore_index=-100, reduction="none")
        loss = (per_tok * w).sum() / w.sum()
    with_obj = obj[:, 1:]
    hit = (logits.detach().argmax(-1) == tgt) | ~with_obj
    return loss, hit.all(dim=1), with_obj.any(dim=1)


def train_model(kg_or_dir, out_dir, config: TrainConfig | None = None, progress: bool = True) -> TrainReport:
    """Train `config.preset` on the KG's corpus, save the model directory, return the report."""
    from kdel.outputs import check_out_dir

    config = config or TrainConfig()
    config.validate()
    preset = get_preset(config.preset)
    inputs = [kg_or_dir] if isinstance(kg_or_dir, (str, Path)) else []
    out = check_out_dir(out_dir, "model", inputs=inputs)  # before anything slow: bad input fails at once

    import torch
    from transformers import GPT2LMHeadModel

    from kdel.facts import FactTable
    from kdel.io import atomic_write_json, staged_dir
    from kdel.models.loading import MODEL_META, save_model
    from kdel.models.tokenizer import build_word_tokenizer
    from kdel.provenance import provenance
    from kdel.runtime import resolve_device, seed_everything, set_threads

    device = resolve_device(config.device)
    threads = set_threads(config.threads) if config.threads is not None else torch.get_num_threads()
    kg = load_kg(kg_or_dir)
    table = FactTable.from_kg(kg)
    lines = [ln for ln in kg.corpus_lines() if ln.strip()]
    if not lines or not table.facts:
        raise UserError("the KG has no facts to train on")

    tok = build_word_tokenizer(lines, [e.name for e in kg.entities], whole_entities=config.whole_entities)
    seed_everything(config.seed)
    model_cfg = preset.gpt2_config(len(tok), tok.bos_token_id, tok.eos_token_id, tok.pad_token_id)
    model = GPT2LMHeadModel(model_cfg).to(device)
    ids, labels, obj, weights = encode_corpus(tok, lines, table, config.object_weight)
    if ids.shape[1] > model_cfg.n_positions:
        raise UserError(f"corpus sentences are {ids.shape[1]} tokens long, more than the model's {model_cfg.n_positions}")
    ids, labels, obj = ids.to(device), labels.to(device), obj.to(device)
    weights = weights.to(device) if weights is not None else None
    probe = RecallProbe.training(tok, table)
    para_probe = RecallProbe.paraphrase(tok, table)

    n = ids.shape[0]
    bs = min(config.batch_size, n)
    steps_per_epoch = math.ceil(n / bs)
    warmup = config.warmup if config.warmup is not None else min(100, 2 * steps_per_epoch)
    decay_steps = config.decay_steps or max(warmup + 1, round(config.decay_epochs * steps_per_epoch))
    peak_lr = config.lr or preset.lr
    opt = torch.optim.AdamW(model.parameters(), lr=peak_lr, betas=(0.9, 0.98), eps=1e-8,
                            weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(s, warmup, decay_steps, config.min_lr_ratio))
    gen = torch.Generator().manual_seed(config.seed)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(desc=f"train {config.preset} (cap {config.max_steps} steps)", unit="step", dynamic_ncols=True)
    curve: list[dict] = []
    start = time.perf_counter()
    model.train()
    step, recall, reached = 0, 0.0, False
    loss_sum, loss_n = 0.0, 0
    pass_hits, pass_total = 0, 0  # object recall seen by this epoch's own forward passes (free, lagging)
    order, pos, epoch_done = torch.empty(0, dtype=torch.long), 0, False
    try:
        while step < config.max_steps:
            if pos >= len(order):
                order, pos = torch.randperm(n, generator=gen), 0
            batch = order[pos : pos + bs].to(device)
            pos += bs
            epoch_done = pos >= n
            loss, hit, has_obj = _loss(model, ids[batch], labels[batch], obj[batch],
                                       weights[batch] if weights is not None else None)
            loss_value = float(loss.detach())
            if not math.isfinite(loss_value):
                raise _diverged(step + 1, loss_value)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            loss_sum += loss_value
            loss_n += 1
            pass_hits += int((hit & has_obj).sum())
            pass_total += int(has_obj.sum())
            if bar is not None:
                bar.update(1)
            if config.eval_every:
                due = step % config.eval_every == 0
            else:  # once per epoch, and only once the epoch's own passes come close to the target
                pass_recall = pass_hits / pass_total if pass_total else 1.0
                due = epoch_done and pass_recall >= config.target_recall - EVAL_MARGIN
            if epoch_done or due or step == config.max_steps:
                if not _weights_finite(model):
                    raise _diverged(step, loss_value)
                point = {"step": step, "epoch": round(step / steps_per_epoch, 3), "loss": loss_sum / loss_n,
                         "pass_recall": pass_hits / pass_total if pass_total else None, "recall": None,
                         "seconds": round(time.perf_counter() - start, 3)}
                if due or step == config.max_steps:
                    recall = quick_recall(model, probe, tok.pad_token_id)
                    point["recall"] = recall
                    reached = recall >= config.target_recall
                curve.append(point)
                if bar is not None:
                    shown = recall if point["recall"] is not None else point["pass_recall"]
                    bar.set_postfix(loss=f"{point['loss']:.3f}", recall=f"{shown or 0:.3f}")
                loss_sum, loss_n = 0.0, 0
                if epoch_done:
                    pass_hits, pass_total = 0, 0
                if reached:
                    break
    finally:
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - start
    if not _weights_finite(model):
        raise _diverged(step, loss_value)

    model.eval()
    recall_full = evaluate_recall(model, tok, table, config.n_bins, probe, para_probe)
    report = TrainReport(
        preset=config.preset, seed=config.seed, steps=step, epochs=round(step / steps_per_epoch, 3),
        seconds=round(seconds, 3), reached_target=reached, target_recall=config.target_recall,
        n_params=sum(p.numel() for p in model.parameters()), vocab_size=len(tok), n_sequences=n,
        kg_hash=kg.content_hash(), recall=recall_full, curve=curve, config=asdict(config),
        threads=threads, device=device, provenance=provenance(device),
    )

    with staged_dir(out) as staging:
        save_model(model.to("cpu"), tok, staging)
        atomic_write_json(staging / MODEL_META, {
            "format": MODEL_FORMAT, "kg_hash": kg.content_hash(), "preset": config.preset,
            "tokenizer": "entity" if config.whole_entities else "word",
            "text_format": getattr(kg, "text_format", "natural"),
        })
        atomic_write_json(staging / REPORT_FILE, report.to_json())
    return report
