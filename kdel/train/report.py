"""What a training run reports (`train_report.json`) and the recall breakdown behind it (DESIGN §3, §12).

Recall is whole-object top-1 recall under teacher forcing over every fact × training template;
first-token recall is reported beside it, never instead. Popularity bins are the shared subject bins
(rank quantiles of subject degree over the facts, `FactTable.subject_bins`).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field

import numpy as np

from kdel.models.scoring import Encoded, encode_many, score_encoded

NO_PARAPHRASES = "no held-out paraphrase prompts (e.g. the sro format has one template per relation): not measured"


@dataclass
class RecallProbe:
    """Pre-encoded (prompt, target) pairs with the fact each pair belongs to."""

    encoded: list[Encoded]
    fact_index: np.ndarray  # int64, position in the table of each pair's fact

    @classmethod
    def training(cls, tokenizer, table) -> RecallProbe:
        return cls._build(tokenizer, table, lambda f: f.prompts)

    @classmethod
    def paraphrase(cls, tokenizer, table) -> RecallProbe:
        return cls._build(tokenizer, table, lambda f: f.paraphrases)

    @classmethod
    def _build(cls, tokenizer, table, prompts_of) -> RecallProbe:
        prompts, targets, idx = [], [], []
        for i, f in enumerate(table.facts):
            for p in prompts_of(f):
                prompts.append(p)
                targets.append(f.target)
                idx.append(i)
        return cls(encode_many(tokenizer, prompts, targets), np.asarray(idx, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.encoded)


def _rate(x: np.ndarray) -> float | None:
    return float(np.mean(x)) if len(x) else None


def _grouped(values: np.ndarray, keys: list) -> dict:
    groups: dict = defaultdict(list)
    for k, v in zip(keys, values):
        groups[k].append(v)
    return {str(k): float(np.mean(v)) for k, v in sorted(groups.items(), key=lambda kv: kv[0])}


def evaluate_recall(model, tokenizer, table, n_bins: int = 5, probe: RecallProbe | None = None,
                    paraphrase_probe: RecallProbe | None = None) -> dict:
    """Recall of every fact × training template (overall, first-token, by popularity bin, by relation)
    and of the held-out paraphrases. Pass pre-built probes to avoid re-encoding."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    probe = probe or RecallProbe.training(tokenizer, table)
    para = paraphrase_probe or RecallProbe.paraphrase(tokenizer, table)
    was_training = model.training
    model.eval()
    s = score_encoded(model, probe.encoded, pad)
    ps = score_encoded(model, para.encoded, pad)
    model.train(was_training)
    bins = table.subject_bins(n_bins)
    pair_bins = [bins[i] for i in probe.fact_index]
    pair_rel = [table.facts[i].relation or "" for i in probe.fact_index]
    per_fact_all = np.ones(len(table.facts), dtype=bool)
    np.logical_and.at(per_fact_all, probe.fact_index, s.recalled)
    return {
        "recall": _rate(s.recalled),
        "first_token_recall": _rate(s.first_token_recalled),
        "fact_recall_all_templates": _rate(per_fact_all),
        "mean_logprob": _rate(s.logprob),
        "n_pairs": len(probe),
        "n_facts": len(table.facts),
        "by_popularity_bin": _grouped(s.recalled, pair_bins),
        "first_token_by_popularity_bin": _grouped(s.first_token_recalled, pair_bins),
        "by_relation": _grouped(s.recalled, pair_rel),
        "paraphrase_recall": _rate(ps.recalled),
        "paraphrase_first_token_recall": _rate(ps.first_token_recalled),
        "n_paraphrase_pairs": len(para),
        **({} if len(para) else {"paraphrase_note": NO_PARAPHRASES}),
        "popularity_bins": {"n_bins": n_bins, "by": "subject degree, rank quantiles over the facts' subjects"},
    }


def quick_recall(model, probe: RecallProbe, pad_id: int, chunk: int = 1024) -> float:
    """Whole-object recall over the training pairs (the stopping criterion), vectorised.

    Same definition as `score_encoded(...).recalled` (every target token top-1 under teacher forcing),
    without the per-pair log-softmax bookkeeping; the final report uses `score_encoded` itself.
    """
    import torch

    if not len(probe):
        return 1.0
    device = next(model.parameters()).device
    seqs = [p + t for p, t in probe.encoded]
    width = max(len(q) for q in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    is_target = torch.zeros((len(seqs), width), dtype=torch.bool)  # positions whose next token is a target token
    for i, ((p, t), q) in enumerate(zip(probe.encoded, seqs)):
        ids[i, : len(q)] = torch.tensor(q)
        is_target[i, len(p) - 1 : len(q) - 1] = True
    mask = (torch.arange(width)[None, :] < torch.tensor([len(q) for q in seqs])[:, None]).long()
    nxt = torch.cat([ids[:, 1:], ids[:, -1:]], dim=1)
    was_training = model.training
    model.eval()
    hits = 0
    with torch.no_grad():
        for start in range(0, len(seqs), chunk):
            sl = slice(start, start + chunk)
            hidden = model.base_model(input_ids=ids[sl].to(device), attention_mask=mask[sl].to(device))[0]
            sel = is_target[sl].to(device)
            pred = model.get_output_embeddings()(hidden[sel]).argmax(-1)
            ok = torch.ones(sel.shape, dtype=torch.bool, device=device)
            ok[sel] = pred == nxt[sl].to(device)[sel]
            hits += int(ok.all(dim=1).sum())
    model.train(was_training)
    return hits / len(seqs)


@dataclass
class TrainReport:
    preset: str
    seed: int
    steps: int
    epochs: float
    seconds: float
    reached_target: bool
    target_recall: float
    n_params: int
    vocab_size: int
    n_sequences: int
    kg_hash: str
    recall: dict  # evaluate_recall(...) of the final model
    curve: list[dict] = field(default_factory=list)  # [{"step", "loss", "recall"}] at each evaluation
    config: dict = field(default_factory=dict)
    threads: int | None = None
    device: str = "cpu"
    # the code version and environment of the run (kdel.provenance): package version, git commit and dirty
    # flag, source hash, library versions, platform, CPU/GPU, torch threads, device
    provenance: dict | None = None

    @property
    def final_recall(self) -> float:
        return float(self.recall["recall"])

    def to_json(self) -> dict:
        d = asdict(self)
        d["format"] = "kdel-train-report/1"
        losses = [c["loss"] for c in self.curve if c.get("loss") is not None]
        d["loss_summary"] = {
            "first": losses[0] if losses else None,
            "final": losses[-1] if losses else None,
            "min": min(losses) if losses else None,
            "n_points": len(losses),
        }
        return d
