"""Token positions that tracing and editing refer to: the subject's tokens, its last token, the last token."""

from __future__ import annotations

from kdel.errors import UserError

SITES = ("subject_last", "last")


def subject_span(tokenizer, prompt: str, subject: str) -> tuple[int, int]:
    """[start, end) token indices of the (last occurrence of the) subject in `tokenizer(prompt)` ids."""
    idx = prompt.rfind(subject)
    if idx < 0:
        raise UserError(f"subject {subject!r} does not occur in prompt {prompt!r}")
    before = tokenizer(prompt[:idx].rstrip())["input_ids"]
    through = tokenizer(prompt[: idx + len(subject)])["input_ids"]
    start, end = len(before), len(through)
    if end <= start:
        raise UserError(f"subject {subject!r} maps to no tokens of prompt {prompt!r}")
    return start, end


def site_position(tokenizer, prompt: str, subject: str, site: str) -> int:
    """Token index of an edit site: 'subject_last' (last subject token) or 'last' (last prompt token)."""
    if site == "subject_last":
        return subject_span(tokenizer, prompt, subject)[1] - 1
    if site == "last":
        return len(tokenizer(prompt)["input_ids"]) - 1
    raise UserError(f"unknown site {site!r}: use {' or '.join(SITES)}")
