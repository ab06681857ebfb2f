"""Rendering facts as text, and exposure control for the training corpus (DESIGN §2, §12)."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence

EXPOSURES = ("uniform", "popularity")


def sub_seed(seed: int, label: str) -> int:
    """A stable 63-bit seed for one random stream of a generation (independent of PYTHONHASHSEED)."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{label}".encode()).digest()[:8], "big") >> 1


def render(template: str, subject: str, obj: str) -> str:
    return template.replace("{s}", subject).replace("{o}", obj)


def prompt_of(template: str, subject: str) -> str:
    """The template filled with the subject and cut before `{o}`, trailing spaces stripped."""
    return template.split("{o}", 1)[0].replace("{s}", subject).rstrip()


def fact_counts(exposure: str, repeats: int, subject_degrees: Sequence[int]) -> list[int]:
    """How many times each fact is written out (each time with every training template).

    uniform: `repeats` times each. popularity: round(repeats · deg(s) / mean deg(s)), at least 1, so the
    corpus keeps roughly the same size while popular subjects' facts are seen more often.
    """
    if exposure == "uniform":
        return [repeats] * len(subject_degrees)
    if exposure == "popularity":
        if not subject_degrees:
            return []
        mean = sum(subject_degrees) / len(subject_degrees)
        return [max(1, round(repeats * d / mean)) for d in subject_degrees]
    raise ValueError(f"unknown exposure {exposure!r}")


def corpus_lines(facts: Sequence[tuple[str, str, Sequence[str]]], counts: Sequence[int], seed: int) -> list[str]:
    """All training sentences: (subject name, object name, templates) × count, shuffled by `seed`."""
    lines = [render(t, s, o) for (s, o, templates), c in zip(facts, counts) for _ in range(c) for t in templates]
    random.Random(sub_seed(seed, "corpus")).shuffle(lines)
    return lines
