"""The v3 step log: one string in ``data``, cut into lines, each read as a step if it is one.

Two wordings are read the same way (see the bodies and their sources in tests/unit/test_corpus.py):

- the documentation's: ``Step:1 Training Started, 5 Steps to go : ETA : 30 minutes``;
- the trainer's own: ``Step:1 Training Started, 5 More Steps to go : ETA : 60 minutes |
  Time Elapsed : 41.27 seconds`` (the last line may lack `` seconds``).

Failures in the trainer's wording are a numbered stage: ``1. [Training model] | Time Elapsed :
812.44 | CUDA out of memory. ...``. Anything else is kept verbatim as an unparsed line.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from bot.events import Event, step

# Line separators: real newlines, and the legacy literal "/n" when a blank or a capital follows
# (" /n Step", " /nStep"), so a path like "/nfs/x" inside a log line is not cut in two.
_SLASH_N_RE = re.compile(r"/n(?=\s|$)|(?:(?<=\s)|^)/n(?=[A-Z])")
# Digits are bounded so int() never meets a number beyond CPython's conversion limit.
_STEP_RE = re.compile(r"step\s*[:#]?\s*(\d{1,9})(?!\d)", re.IGNORECASE)
_TO_GO = r"(\d{1,9})\s+(?:more\s+)?steps?\s+to\s+go\b"
# Where a label ends: a comma, any pipe (the trainer's "| Time Elapsed ..."), the ETA, the
# steps to go, or an elapsed time written without a pipe.
_LABEL_END_RE = re.compile(
    r",|\s*\||\s*:\s*eta\b|\s" + _TO_GO + r"|\s*\btime\s*elapsed\b", re.IGNORECASE
)
_TO_GO_RE = re.compile(r"(?<!\d)" + _TO_GO, re.IGNORECASE)
_ETA_RE = re.compile(
    r"\beta\s*:?\s*(\d{1,9}(?:\.\d{1,6})?)\s*"
    r"(hours?|hrs?|h|minutes?|mins?|m|seconds?|secs?|s)\b",
    re.IGNORECASE,
)
# "Time Elapsed : 1502.6389410495758 seconds"; the unit may be missing (seconds, then).
_ELAPSED_RE = re.compile(
    r"\btime\s*elapsed\s*:?\s*(\d{1,12}(?:\.\d+)?)\s*(minutes?|mins?|m|seconds?|secs?|s)?\b",
    re.IGNORECASE,
)
_FAILURE_LINE_RE = re.compile(r"\s*\d{1,3}\s*[.)]\s*\[([^\]\n]{1,120})\]\s*(.*)", re.DOTALL)
_FAIL_WORD_RE = re.compile(r"fail|error", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class FailureLine:
    """The trainer's failure line: its stage, the exception text, the time elapsed."""

    stage: str
    reason: str | None
    elapsed_seconds: float | None


def split_log(data: Any) -> tuple[str, ...]:
    """The log's lines, stripped, empty segments dropped; a list of strings is joined first."""
    if isinstance(data, list):
        data = "\n".join(item for item in data if isinstance(item, str))
    if not isinstance(data, str):
        return ()
    lines = []
    for physical in data.splitlines():
        for piece in _SLASH_N_RE.split(physical):
            line = piece.strip()
            if line:
                lines.append(line)
    return tuple(lines)


def parse_step_line(line: str, seq: int = 0) -> Event | None:
    """A step line as a :class:`Step` (``seq`` is its position in the log), or None."""
    line = line.strip()
    match = _STEP_RE.match(line)
    if match is None:
        return None
    rest = line[match.end() :]
    end = _LABEL_END_RE.search(rest)
    label = (rest[: end.start()] if end else rest).strip().strip(":-.").strip()
    to_go = _TO_GO_RE.search(rest)
    return step(
        seq=seq,
        number=int(match.group(1)),
        label=label,
        steps_to_go=int(to_go.group(1)) if to_go else None,
        eta_minutes=eta_minutes(rest),
        raw=line,
        elapsed_seconds=elapsed_seconds(rest),
    )


def eta_minutes(text: str) -> int | None:
    """The ``ETA : M minutes`` of a line in whole minutes, rounded up; None without one."""
    match = _ETA_RE.search(text)
    if match is None:
        return None
    amount = float(match.group(1))
    unit = match.group(2).lower()
    if unit.startswith("h"):
        amount *= 60
    elif unit.startswith("s"):
        amount /= 60
    # Round up: "ETA 30 seconds" should not read as "0 minutes".
    return math.ceil(amount)


def elapsed_seconds(text: str) -> float | None:
    """The ``Time Elapsed : S seconds`` of a line in seconds; None without one."""
    match = _ELAPSED_RE.search(text)
    if match is None:
        return None
    seconds = float(match.group(1))
    unit = (match.group(2) or "s").lower()
    return seconds * 60 if unit.startswith("m") else seconds


def parse_failure_line(line: str) -> FailureLine | None:
    """The trainer's ``N. [Stage] | Time Elapsed : S | reason`` line, or None."""
    match = _FAILURE_LINE_RE.fullmatch(line)
    if match is None:
        return None
    elapsed = None
    reasons = []
    for segment in match.group(2).split("|"):
        segment = segment.strip()
        if not segment:
            continue
        seconds = elapsed_seconds(segment)
        if seconds is not None and elapsed is None and segment.lower().startswith("time"):
            elapsed = seconds
        else:
            reasons.append(segment)
    return FailureLine(match.group(1).strip(), " | ".join(reasons) or None, elapsed)


def failure_in_log(lines: tuple[str, ...]) -> tuple[FailureLine | None, str | None]:
    """The last failure line of the log, and the last other line that speaks of a failure."""
    trainer = None
    other = None
    for line in reversed(lines):
        if trainer is None:
            trainer = parse_failure_line(line)
            if trainer is not None:
                continue
        if other is None and _FAIL_WORD_RE.search(line) and _STEP_RE.match(line) is None:
            other = line
        if trainer is not None and other is not None:
            break
    return trainer, other
