"""Unique, seeded entity names from Faker's en_US data (DESIGN §1, §2).

People: "First Last", sampled with Faker's own frequency weights by a seeded `random.Random` (much faster
than calling Faker per name, same data). When two-word names start colliding (huge graphs) a middle
name is added. Places (attribute values): Faker's `city()` on a seeded Faker instance.

Rules that keep names apart from everything else a word-level tokenizer sees:
- every token is one capitalised alphabetic word; no token equals a template word (case-insensitively);
- names are unique and no name is a token-prefix of another (so a whole-object match is unambiguous).
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable
from itertools import accumulate

_TOKEN = re.compile(r"[A-Z][A-Za-z]*")


class NameRegistry:
    """The set of accepted names, with the checks above."""

    def __init__(self, reserved_words: Iterable[str] = ()):
        self.reserved = {w.lower() for w in reserved_words}
        self.names: set[str] = set()
        self.prefixes: set[str] = set()

    def acceptable(self, name: str) -> bool:
        tokens = name.split()
        if not tokens or any(not _TOKEN.fullmatch(t) or t.lower() in self.reserved for t in tokens):
            return False
        if name in self.names or name in self.prefixes:
            return False
        return not any(" ".join(tokens[:i]) in self.names for i in range(1, len(tokens)))

    def add(self, name: str) -> bool:
        if not self.acceptable(name):
            return False
        self.names.add(name)
        tokens = name.split()
        for i in range(1, len(tokens)):
            self.prefixes.add(" ".join(tokens[:i]))
        return True


def _weighted(table) -> tuple[list[str], list[float]]:
    words = [w for w in table if _TOKEN.fullmatch(w)]
    return words, list(accumulate(float(table[w]) for w in words))


def person_names(count: int, seed: int, registry: NameRegistry) -> list[str]:
    """`count` unique person names, deterministic for (seed, Faker version, reserved words)."""
    from faker.providers.person.en_US import Provider

    firsts, first_cum = _weighted(Provider.first_names)
    lasts, last_cum = _weighted(Provider.last_names)
    rng = random.Random(seed)
    out: list[str] = []
    misses = 0
    middle = False
    while len(out) < count:
        first = rng.choices(firsts, cum_weights=first_cum)[0]
        last = rng.choices(lasts, cum_weights=last_cum)[0]
        if middle:
            name = f"{first} {rng.choices(firsts, cum_weights=first_cum)[0]} {last}"
        else:
            name = f"{first} {last}"
        if registry.add(name):
            out.append(name)
            misses = 0
        else:
            misses += 1
            if misses > 50 and not middle:  # two-word names are running out: add middle names from now on
                middle, misses = True, 0
            elif misses > 100_000:
                raise RuntimeError(f"could not draw {count} unique names (got {len(out)})")
    return out


def place_names(count: int, seed: int, registry: NameRegistry) -> list[str]:
    """`count` unique place names (Faker `city()`, seeded) for attribute values."""
    from faker import Faker

    fake = Faker("en_US")
    fake.seed_instance(seed)
    out: list[str] = []
    misses = 0
    while len(out) < count:
        name = fake.city()
        if registry.add(name):
            out.append(name)
        else:
            misses += 1
            if misses > 100_000:
                raise RuntimeError(f"could not draw {count} unique place names (got {len(out)})")
    return out
