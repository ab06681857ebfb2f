"""Relations and their templates (DESIGN §1, §2, §12).

Every relation is built around a lowercase noun phrase ("mentor", "former mentor"). Training templates:
a natural verb phrase for the built-in relations plus noun-phrase patterns; held-out templates reorder
words that already occur in the relation's own training templates, so a word-level tokenizer trained on
the corpus knows every word of a paraphrase. The object `{o}` is always the last token of a template.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from synth_kg.errors import UserError

# (name, noun phrase, verb template). Person-to-person relations, phrased so that one object is natural.
BUILTIN_RELATIONS: tuple[tuple[str, str, str], ...] = (
    ("mentor", "mentor", "{s} was mentored by {o}"),
    ("manager", "manager", "{s} reports to {o}"),
    ("spouse", "spouse", "{s} is married to {o}"),
    ("best_friend", "best friend", "{s} is best friends with {o}"),
    ("rival", "rival", "{s} competes against {o}"),
    ("neighbor", "neighbor", "{s} lives next door to {o}"),
    ("doctor", "doctor", "{s} is treated by {o}"),
    ("lawyer", "lawyer", "{s} is represented in court by {o}"),
    ("teacher", "teacher", "{s} was taught by {o}"),
    ("landlord", "landlord", "{s} rents a flat from {o}"),
    ("business_partner", "business partner", "{s} runs a company with {o}"),
    ("tennis_partner", "tennis partner", "{s} plays tennis with {o}"),
    ("dance_partner", "dance partner", "{s} dances with {o}"),
    ("accountant", "accountant", "{s} has the taxes done by {o}"),
    ("dentist", "dentist", "{s} gets teeth checked by {o}"),
    ("barber", "barber", "{s} gets haircuts from {o}"),
    ("coach", "coach", "{s} is coached by {o}"),
    ("bodyguard", "bodyguard", "{s} is protected by {o}"),
    ("biographer", "biographer", "{s} had a biography written by {o}"),
    ("agent", "agent", "{s} is booked by {o}"),
    ("editor", "editor", "{s} is edited by {o}"),
    ("assistant", "assistant", "{s} is assisted by {o}"),
    ("driver", "driver", "{s} is driven around by {o}"),
    ("tailor", "tailor", "{s} has suits made by {o}"),
    ("roommate", "roommate", "{s} shares a flat with {o}"),
    ("advisor", "advisor", "{s} is advised by {o}"),
    ("sponsor", "sponsor", "{s} is funded by {o}"),
    ("godparent", "godparent", "{s} was baptized in the presence of {o}"),
    ("heir", "heir", "{s} will leave everything to {o}"),
    ("successor", "successor", "{s} was succeeded by {o}"),
    ("predecessor", "predecessor", "{s} took over from {o}"),
    ("deputy", "deputy", "{s} delegates the daily work to {o}"),
    ("coauthor", "coauthor", "{s} wrote a book together with {o}"),
    ("bandmate", "bandmate", "{s} plays in a band with {o}"),
    ("teammate", "teammate", "{s} plays on a team with {o}"),
    ("hero", "hero", "{s} looks up to {o}"),
    ("pen_pal", "pen pal", "{s} writes letters to {o}"),
    ("confidant", "confidant", "{s} tells every secret to {o}"),
    ("guardian", "guardian", "{s} was raised by {o}"),
    ("therapist", "therapist", "{s} talks about feelings with {o}"),
    ("chef", "private chef", "{s} has meals cooked by {o}"),
    ("trainer", "personal trainer", "{s} works out with {o}"),
    ("tutor", "tutor", "{s} takes lessons from {o}"),
    ("nurse", "nurse", "{s} is cared for by {o}"),
    ("babysitter", "babysitter", "{s} leaves the children with {o}"),
    ("photographer", "photographer", "{s} has portraits taken by {o}"),
    ("architect", "architect", "{s} had a house designed by {o}"),
    ("banker", "banker", "{s} keeps savings with {o}"),
    ("chess_opponent", "chess opponent", "{s} plays chess against {o}"),
    ("travel_companion", "travel companion", "{s} travels the world with {o}"),
)

# Attribute relations: their objects come from one shared pool of place names (entities of kind "value").
ATTRIBUTE_RELATIONS: tuple[tuple[str, str, str], ...] = (
    ("birthplace", "birthplace", "{s} was born in {o}"),
    ("home_city", "home city", "{s} lives in {o}"),
    ("work_city", "work city", "{s} works in {o}"),
    ("favorite_city", "favorite city", "{s} loves visiting {o}"),
    ("study_city", "study city", "{s} studied in {o}"),
    ("wedding_city", "wedding city", "{s} got married in {o}"),
    ("retirement_city", "retirement city", "{s} plans to retire in {o}"),
    ("holiday_city", "holiday city", "{s} spends holidays in {o}"),
)

# Modifiers that make further relation names with the same structure ("former mentor").
MODIFIERS: tuple[str, ...] = (
    "former", "current", "first", "second", "third", "favorite", "secret", "trusted", "oldest", "newest",
    "usual", "main", "backup", "childhood", "college", "weekend", "summer", "winter", "local", "foreign",
    "preferred", "lifelong", "temporary", "official",
)

# Training patterns built from the noun phrase; {a} is "a" or "an". The first two are always used, so
# the held-out patterns below only reuse their words.
NOUN_TEMPLATES: tuple[str, ...] = (
    "the {n} of {s} is {o}",
    "{s} has {a} {n} named {o}",
    "for {s} the {n} is {o}",
    "everyone knows the {n} of {s} as {o}",
    "the {n} of {s} goes by {o}",
)
HELDOUT_TEMPLATES: tuple[str, ...] = (
    "the {n} {s} has is {o}",
    "of {s} the {n} is {o}",
    "{s} has {a} {n} is {o}",
)

_WORD = re.compile(r"[a-z]+")


@dataclass(frozen=True)
class Relation:
    id: int
    name: str
    templates: tuple[str, ...]
    heldout_templates: tuple[str, ...]
    kind: str = "graph"  # "graph" (between entities) or "attribute" (object from the value pool)


def template_words(template: str) -> list[str]:
    """The lowercase words of a template, placeholders excluded."""
    return _WORD.findall(template.replace("{s}", " ").replace("{o}", " "))


def check_template(template: str) -> str | None:
    """None if `template` is well formed ({s} once, {o} once and last, lowercase words), else why not."""
    if template.count("{s}") != 1 or template.count("{o}") != 1:
        return f"template {template!r} must contain {{s}} and {{o}} exactly once"
    if not template.rstrip(" .").endswith("{o}"):
        return f"template {template!r} must end with {{o}}"
    rest = template.replace("{s}", " ").replace("{o}", " ")
    if any(tok and not _WORD.fullmatch(tok) for tok in rest.replace(".", " ").split()):
        return f"template {template!r} may only hold lowercase words besides {{s}} and {{o}}"
    return None


_SRO_TOKEN = re.compile(r"[a-z][a-z0-9_]*")


def sro_template(token: str) -> str:
    """The one template of a relation in the `sro` format: subject, relation token, object."""
    return "{s} " + token + " {o}"


def check_sro_template(template: str) -> tuple[str | None, str | None]:
    """(None, relation token) if `template` is `{s} TOKEN {o}` with a lowercase word-like token, else (why not, None)."""
    parts = template.split(" ")
    if len(parts) != 3 or parts[0] != "{s}" or parts[2] != "{o}" or not _SRO_TOKEN.fullmatch(parts[1]):
        return (f"template {template!r} must be '{{s}} TOKEN {{o}}' in the sro format (TOKEN: lowercase letters, "
                "digits and underscores)"), None
    return None, parts[1]


def to_sro(relations: list[Relation]) -> list[Relation]:
    """The same relations in the `sro` format: token = the relation's name (already one word: spaces are
    underscores), one template `{s} TOKEN {o}`, no held-out template."""
    out = [Relation(r.id, r.name, (sro_template(r.name),), (), r.kind) for r in relations]
    tokens = [r.name for r in out]
    assert len(set(tokens)) == len(tokens), "relation names must be distinct"
    return out


def _article(noun: str) -> str:
    return "an" if noun[0] in "aeiou" else "a"


def _fill(pattern: str, noun: str) -> str:
    return pattern.replace("{n}", noun).replace("{a}", _article(noun))


def _relation(rid: int, name: str, noun: str, verb: str | None, k: int, h: int, kind: str) -> Relation:
    patterns = [_fill(p, noun) for p in NOUN_TEMPLATES]
    training = ([patterns[0], patterns[1], verb] + patterns[2:]) if verb else patterns
    if k > len(training):
        raise UserError(f"--templates {k} is more than the {len(training)} training templates a relation has")
    if h > len(HELDOUT_TEMPLATES):
        raise UserError(f"--heldout {h} is more than the {len(HELDOUT_TEMPLATES)} held-out templates available")
    heldout = [_fill(p, noun) for p in HELDOUT_TEMPLATES[:h]]
    rel = Relation(rid, name, tuple(training[:k]), tuple(heldout), kind)
    known = {w for t in rel.templates for w in template_words(t)}
    for t in rel.templates + rel.heldout_templates:
        problem = check_template(t)
        assert problem is None, problem
    for t in rel.heldout_templates:
        assert set(template_words(t)) <= known, f"held-out template {t!r} uses words not in training templates"
    return rel


def _generated_nouns():
    """Noun phrases beyond the built-ins: one modifier, then two modifiers, on each built-in noun."""
    nouns = [n for _, n, _ in BUILTIN_RELATIONS]
    for m in MODIFIERS:
        for n in nouns:
            yield f"{m} {n}"
    for m1 in MODIFIERS:
        for m2 in MODIFIERS:
            if m1 != m2:
                for n in nouns:
                    yield f"{m1} {m2} {n}"


def max_relations() -> int:
    b = len(BUILTIN_RELATIONS)
    m = len(MODIFIERS)
    return b + m * b + m * (m - 1) * b


def make_relations(count: int, attributes: int = 0, templates: int = 3, heldout: int = 1) -> list[Relation]:
    """`count` graph relations (built-ins first, then generated names), then `attributes` attribute relations."""
    if count < 1:
        raise UserError(f"--relations must be >= 1, got {count}")
    if count > max_relations():
        raise UserError(f"--relations {count} is more than the {max_relations()} relation names kdel can make")
    if templates < 3:
        raise UserError(f"--templates must be >= 3 (DESIGN §2), got {templates}")
    if heldout < 1:
        raise UserError(f"--heldout must be >= 1, got {heldout}")
    if not 0 <= attributes <= len(ATTRIBUTE_RELATIONS):
        raise UserError(f"--attribute-relations must be between 0 and {len(ATTRIBUTE_RELATIONS)}, got {attributes}")
    out: list[Relation] = []
    for name, noun, verb in BUILTIN_RELATIONS[:count]:
        out.append(_relation(len(out), name, noun, verb, templates, heldout, "graph"))
    if count > len(out):
        for noun in _generated_nouns():
            out.append(_relation(len(out), noun.replace(" ", "_"), noun, None, templates, heldout, "graph"))
            if len(out) == count:
                break
    for name, noun, verb in ATTRIBUTE_RELATIONS[:attributes]:
        out.append(_relation(len(out), name, noun, verb, templates, heldout, "attribute"))
    return out


def vocabulary(relations: list[Relation]) -> set[str]:
    """Every word used by any template (training or held-out) of `relations`."""
    return {w for r in relations for t in r.templates + r.heldout_templates for w in template_words(t)}
