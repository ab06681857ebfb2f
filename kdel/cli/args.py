"""Parsing of the comma-separated flags several commands share (--methods, --sites, --layers, ...): one clear
`kdel: error:` line for a bad value."""

from __future__ import annotations

from kdel.errors import UserError


def parse_list(value: str, flag: str) -> tuple[str, ...]:
    """'a, b' -> ('a', 'b'); an empty list is an error."""
    items = tuple(v.strip() for v in value.split(",") if v.strip())
    if not items:
        raise UserError(f"{flag} is empty")
    return items


def parse_layer_list(value: str, flag: str, words: tuple[str, ...] = ()) -> str | tuple[int, ...]:
    """One of `words` (e.g. 'auto', 'all') as is, else the comma-separated layer indices (each >= 0), in order."""
    v = value.strip()
    if v in words:
        return v
    out = []
    for part in parse_list(v, flag):
        try:
            layer = int(part)
        except ValueError:
            allowed = ", ".join(words) + " or " if words else ""
            raise UserError(f"{flag} must be {allowed}a comma-separated list of layer indices, got {value!r}") from None
        if layer < 0:
            raise UserError(f"{flag}: {layer} is not a layer index (>= 0)")
        out.append(layer)
    return tuple(out)
