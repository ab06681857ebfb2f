"""One table of facts for every stage, from a KG bundle or from a user's facts file (DESIGN §8, §12).

Both sources become the same `FactTable` (surface strings: subject, relation, target), so probe groups,
popularity bins and scoring are computed identically: exporting a KG with `export_kg_facts` and loading
the file back gives the same table, hence the same audit results.

Facts-file lines (JSONL): {"subject", "prompt", "target", "relation"?, "paraphrases"?, "popularity"?}
plus kdel's optional extensions "prompts" (every training-phrasing prompt, `prompt` first),
"object_popularity", and "subject_id" / "object_id" (entity ids, written by `kdel kg export-facts`).
`--fact N` is the 0-based line number.

Entities are matched on normalised surface forms (`synth_kg.surface_key`: leading/trailing whitespace
stripped, case kept), so a target " Madrid" is the subject "Madrid" for popularity counts and probe groups.
Popularity bins and probe groups come from `synth_kg.index.FactIndex`, the one implementation the KG path
uses too; a facts file's entity ids (the bins' tie-break) are its `subject_id`/`object_id` fields when every
line has them, else the order of first appearance.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from kdel.errors import UserError
from kdel.io import atomic_write_text, read_jsonl, sha256_file, sha256_text
from synth_kg.index import FactIndex, first_appearance_ids, surface_key
from synth_kg.probes import ProbeIndex


@dataclass(frozen=True)
class Fact:
    id: int  # triple id in a KG bundle, 0-based line number in a facts file; always its position in the table
    subject: str
    target: str  # the object's surface text
    relation: str | None
    prompts: tuple[str, ...]  # training phrasings, each cut before the object; prompts[0] is canonical
    paraphrases: tuple[str, ...] = ()  # held-out phrasings
    subject_popularity: float = 0.0
    object_popularity: float = 0.0

    @property
    def prompt(self) -> str:
        return self.prompts[0]


@dataclass
class FactTable:
    facts: list[Fact]
    source: str  # "kg" or "facts"
    source_hash: str  # the KG bundle's content hash, or the facts file's sha256
    corpus: list[str] | None = None  # training text (KG corpus or --corpus), for key statistics and KL prefixes
    kg: object | None = None  # the KnowledgeGraph when source == "kg"
    meta: dict = field(default_factory=dict)
    entity_ids: dict[str, int] | None = None  # surface key -> entity id; None = order of first appearance

    # -- construction ------------------------------------------------------------------------
    @property
    def facts_path(self) -> str | None:
        """The facts file this table was read from (None for a KG bundle)."""
        return self.meta.get("path") if self.source == "facts" else None

    @classmethod
    def from_kg(cls, kg) -> FactTable:
        facts = []
        for t in kg.triples:
            facts.append(
                Fact(
                    id=t.id,
                    subject=kg.subject_name(t.id),
                    target=kg.object_name(t.id),
                    relation=kg.relation(t.relation).name,
                    prompts=tuple(kg.prompts(t.id)),
                    paraphrases=tuple(kg.paraphrase_prompts(t.id)),
                    subject_popularity=float(kg.degree(t.subject)),
                    object_popularity=float(kg.degree(t.object)),
                )
            )
        ids = {surface_key(e.name): e.id for e in kg.entities}
        return cls(facts, "kg", kg.content_hash(), corpus=kg.corpus_lines(), kg=kg, entity_ids=ids)

    @classmethod
    def from_jsonl(cls, path: str | Path, corpus: str | Path | None = None) -> FactTable:
        path = Path(path)
        if path.is_dir():
            raise UserError(f"facts file {path} is a directory, not a JSON-lines file")
        if not path.is_file():
            raise UserError(f"facts file {path} does not exist")
        rows = []
        seen: dict[tuple, tuple[int, str]] = {}  # for _check_line: the first line giving each key a target
        # a blank line is refused: fact id = 0-based line number must stay true
        for lineno, row in read_jsonl(path, blank_lines=False):
            if not isinstance(row, dict):
                raise UserError(f"{path}:{lineno}: each line must be a JSON object")
            for key in ("subject", "prompt", "target"):
                if not isinstance(row.get(key), str) or not row[key].strip():
                    raise UserError(f"{path}:{lineno}: missing or empty field {key!r}")
            if row["subject"] not in row["prompt"]:
                raise UserError(f"{path}:{lineno}: subject {row['subject']!r} does not occur in its prompt")
            for key in ("paraphrases", "prompts"):
                if key in row and not (
                    isinstance(row[key], list) and all(isinstance(p, str) and p.strip() for p in row[key])
                ):
                    raise UserError(f"{path}:{lineno}: {key!r} must be a list of non-empty strings")
            for key in ("popularity", "object_popularity"):
                if key in row and (not isinstance(row[key], (int, float)) or isinstance(row[key], bool)):
                    raise UserError(f"{path}:{lineno}: {key!r} must be a number")
            if "relation" in row and row["relation"] is not None and not isinstance(row["relation"], str):
                raise UserError(f"{path}:{lineno}: 'relation' must be a string")
            _check_line(path, lineno, row, seen)
            rows.append(row)
        if not rows:
            raise UserError(f"facts file {path} has no facts")
        entity_ids = _entity_ids(rows, path)
        mentions = Counter()  # lines mentioning each entity (normalised surface form)
        for r in rows:
            mentions[surface_key(r["subject"])] += 1
            mentions[surface_key(r["target"])] += 1
        given = {}
        for r in rows:
            if "popularity" in r:
                given.setdefault(surface_key(r["subject"]), float(r["popularity"]))
            if "object_popularity" in r:
                given.setdefault(surface_key(r["target"]), float(r["object_popularity"]))

        def pop(name: str) -> float:
            key = surface_key(name)
            return given.get(key, float(mentions[key]))

        facts = []
        for i, r in enumerate(rows):
            prompts = [r["prompt"]] + [p for p in r.get("prompts", []) if p != r["prompt"]]
            facts.append(
                Fact(
                    id=i,
                    subject=r["subject"],
                    target=r["target"],
                    relation=r.get("relation"),
                    prompts=tuple(prompts),
                    paraphrases=tuple(r.get("paraphrases", [])),
                    subject_popularity=pop(r["subject"]),
                    object_popularity=pop(r["target"]),
                )
            )
        corpus_lines = None
        meta = {"path": str(path)}
        if corpus is not None:
            cpath = Path(corpus)
            if not cpath.is_file():
                raise UserError(f"corpus file {cpath} does not exist")
            corpus_lines = [ln for ln in cpath.read_text(encoding="utf-8").splitlines() if ln.strip()]
            meta["corpus_hash"] = sha256_text("\n".join(corpus_lines))
        return cls(facts, "facts", sha256_file(path), corpus=corpus_lines, meta=meta, entity_ids=entity_ids)

    # -- lookup ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.facts)

    def __iter__(self):
        return iter(self.facts)

    def fact(self, fact_id: int) -> Fact:
        if not 0 <= fact_id < len(self.facts):
            what = "triple ids" if self.source == "kg" else "fact ids (0-based line numbers)"
            raise UserError(f"fact {fact_id} does not exist: valid {what} are 0..{len(self.facts) - 1}")
        return self.facts[fact_id]

    def __getitem__(self, fact_id: int) -> Fact:
        return self.fact(fact_id)

    @property
    def entity_names(self) -> list[str]:
        """Every subject and target string, sorted: the candidate answers."""
        return sorted({f.subject for f in self.facts} | {f.target for f in self.facts})

    @property
    def has_relations(self) -> bool:
        return any(f.relation is not None for f in self.facts)

    def key_text(self) -> str:
        """A stable identity of this table's content (for cache keys and case ids). A facts file's --corpus
        is part of it (it sets the key statistics); a KG bundle's hash already covers its corpus."""
        corpus = self.meta.get("corpus_hash")
        return sha256_text(self.source + ":" + self.source_hash + (f":corpus:{corpus}" if corpus else ""))

    def training_prompts(self) -> list[str]:
        """Corpus for key statistics: the corpus if known, else every prompt + target (thin; callers warn)."""
        if self.corpus:
            return list(self.corpus)
        lines = []
        for f in self.facts:
            for p in f.prompts + f.paraphrases:
                lines.append(p + " " + f.target)
        return lines

    # -- popularity and probe groups (one implementation for both sources: synth_kg.index) ----------
    @cached_property
    def fact_index(self) -> FactIndex:
        """Bins and probe groups over normalised surface forms; popularity = the facts' popularity fields."""
        keys = [(surface_key(f.subject), surface_key(f.relation) if f.relation is not None else None,
                 surface_key(f.target)) for f in self.facts]
        popularity: dict[str, float] = {}
        for (s, _, o), f in zip(keys, self.facts):
            popularity.setdefault(s, f.subject_popularity)
            popularity.setdefault(o, f.object_popularity)
        ids = self.entity_ids if self.entity_ids is not None else first_appearance_ids(keys)
        return FactIndex(keys, popularity, ids, paraphrased=[bool(f.paraphrases) for f in self.facts])

    def subject_bins(self, n_bins: int = 5) -> list[int]:
        """Popularity bin of each fact's subject: rank quantiles over the facts' subjects, ties by entity id."""
        return self.fact_index.subject_bins(n_bins)

    def object_bins(self, n_bins: int = 5) -> list[int]:
        return self.fact_index.object_bins(n_bins)

    @property
    def probe_index(self) -> ProbeIndex:
        return self.fact_index.probes

    def unrelated_sample(self, size: int = 200, seed: int = 0) -> list[int]:
        return self.fact_index.unrelated_sample(size, seed)

    def probe_groups(self, fact_id: int, unrelated_pool: list[int] | None = None) -> dict[str, list[int]]:
        """Fact ids of every probe group of `fact_id` (DESIGN §1, precedence of §12); `paraphrase` is empty
        when the fact has no held-out prompts."""
        self.fact(fact_id)
        return self.fact_index.groups(fact_id, unrelated_pool or [])

    def check_encodable(self, tokenizer) -> None:
        """Every target must encode without the unknown token (a user error otherwise)."""
        from kdel.models.scoring import unencodable_reason

        for f in self.facts:
            why = unencodable_reason(tokenizer, f.target)
            if why:
                where = f"line {f.id + 1}" if self.source == "facts" else f"triple {f.id}"
                raise UserError(f"{where}: target {f.target!r} cannot be encoded: {why}")


def _check_line(path: Path, lineno: int, row: dict, seen: dict) -> None:
    """Facts-file checks beyond the fields' types: no prompt, extra prompt or paraphrase ending in whitespace
    (the target is appended after one space), and one target per (subject, relation) and per prompt (a
    second, different target is a contradiction; compared with surrounding whitespace stripped). `seen` maps
    each key to the first (line, target) that used it."""
    for key, texts in (("prompt", [row["prompt"]]), ("prompt", row.get("prompts", [])),
                       ("paraphrase", row.get("paraphrases", []))):
        for text in texts:
            if text != text.rstrip():
                raise UserError(f"{path}:{lineno}: {key} {text!r} ends with whitespace; write it without trailing "
                                f"spaces (the target is appended after one space)")
    keys = [("prompt", row["prompt"])]
    if row.get("relation") is not None:
        keys.insert(0, ("subject and relation", row["subject"].strip(), row["relation"].strip()))
    target = row["target"].strip()
    for key in keys:
        first = seen.setdefault(key, (lineno, target))
        if first[1] != target:
            what = ", ".join(repr(k) for k in key[1:])
            raise UserError(f"{path}: lines {first[0]} and {lineno} give the same {key[0]} ({what}) two different "
                            f"targets, {first[1]!r} and {target!r}; keep one")


def fact_to_json(f: Fact) -> dict:
    row = {
        "subject": f.subject,
        "prompt": f.prompts[0],
        "target": f.target,
        "prompts": list(f.prompts),
        "paraphrases": list(f.paraphrases),
        "popularity": f.subject_popularity,
        "object_popularity": f.object_popularity,
    }
    if f.relation is not None:
        row["relation"] = f.relation
    return row


def _entity_ids(rows: list[dict], path: Path) -> dict[str, int] | None:
    """Entity ids from the `subject_id`/`object_id` fields (all lines or none), keyed by surface form; None
    when the file has none (the order of first appearance is used then)."""
    has = [("subject_id" in r) + ("object_id" in r) for r in rows]
    if not any(has):
        return None
    if not all(h == 2 for h in has):
        raise UserError(f"{path}: 'subject_id' and 'object_id' must be given on every line or on none")
    ids: dict[str, int] = {}
    names: dict[int, str] = {}
    for i, r in enumerate(rows):
        for name_key, id_key in (("subject", "subject_id"), ("target", "object_id")):
            eid, name = r[id_key], surface_key(r[name_key])
            if not isinstance(eid, int) or isinstance(eid, bool) or eid < 0:
                raise UserError(f"{path}: fact {i}: {id_key!r} must be an integer >= 0")
            if ids.setdefault(name, eid) != eid or names.setdefault(eid, name) != name:
                raise UserError(f"{path}: fact {i}: {id_key} {eid} of {name!r} disagrees with an earlier "
                                "line (one id per entity, one entity per id)")
    return ids


def export_kg_facts(kg, path: str | Path) -> int:
    """Write a KG's facts as a facts file (line number = triple id, entity ids kept). Returns the number of lines."""
    table = FactTable.from_kg(kg)
    rows = []
    for f in table.facts:
        row = fact_to_json(f)
        row["subject_id"], row["object_id"] = kg.triples[f.id].subject, kg.triples[f.id].object
        rows.append(row)
    text = "".join(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n" for row in rows)
    atomic_write_text(path, text)
    return len(table.facts)


def load_fact_table(kg: str | Path | None = None, facts: str | Path | None = None, corpus=None) -> FactTable:
    """The CLI's rule: exactly one of --kg DIR or --facts FILE."""
    if (kg is None) == (facts is None):
        raise UserError("give exactly one of --kg DIR (a kdel KG bundle) or --facts FILE.jsonl")
    if kg is not None:
        from synth_kg import KnowledgeGraph

        return FactTable.from_kg(KnowledgeGraph.load(kg))
    return FactTable.from_jsonl(facts, corpus=corpus)
