"""Normalization of logged keys and values, off the hot path's fast lane.

The training loop must never be crashed by tracking: a bad key or value becomes a
:class:`~bridge.errors.BridgeWarning` naming the call and the value, counted on the run,
unless the run is ``strict``, when it raises :class:`~bridge.errors.InvalidValueError`.

Documented normalizations (each visible as a warning, except the lossless ones):
- bool metric -> 1.0 / 0.0 (lossless, no warning); int -> float.
- numpy scalars, 0-d arrays, torch/jax 0-d tensors -> ``float(x.item())`` (lossless).
- NaN, +inf, -inf are stored as such.
- A config/param/summary value JSON cannot encode -> its ``repr()`` string, with a warning.
- Text that is not valid Unicode (lone surrogates, e.g. from undecodable file names) cannot
  be stored as UTF-8: in values each one becomes U+FFFD, with a warning; a key holding one
  is refused (replacing it could merge two keys).
- A timestamp must be integer milliseconds in [0, year 10000).
"""

from __future__ import annotations

import json
import re
import warnings
from typing import Any, Callable

from bridge.errors import BridgeWarning, InvalidValueError

__all__ = [
    "MAX_KEY_LENGTH",
    "MAX_TIMESTAMP_MS",
    "Problem",
    "clean_text",
    "check_key",
    "to_float",
    "to_json",
]

MAX_KEY_LENGTH = 250
MAX_TIMESTAMP_MS = 253_402_300_800_000  # 10000-01-01T00:00:00Z, exclusive
_SURROGATE = re.compile("[\ud800-\udfff]")


def clean_text(text: str) -> tuple[str, bool]:
    """``text`` storable as UTF-8: lone surrogates replaced by U+FFFD; True if any were."""
    if text.isascii():
        return text, False
    cleaned = _SURROGATE.sub("\ufffd", text)
    return cleaned, cleaned != text


class Problem(Exception):
    """An input bridge refuses; turned into a warning or, when strict, an error."""


def check_key(key: Any) -> str:
    """Return the key if bridge can store it, else raise :class:`Problem`."""
    if type(key) is not str:
        raise Problem(f"key must be a string, got {type(key).__name__} {key!r:.80}")
    if not key or not key.strip():
        raise Problem("key must not be empty")
    if len(key) > MAX_KEY_LENGTH:
        raise Problem(f"key is {len(key)} characters, over the limit of {MAX_KEY_LENGTH}: "
                      f"{key[:40]!r}…")
    if "\x00" in key:
        raise Problem(f"key contains a NUL character: {key!r:.80}")
    if not key.isascii() and _SURROGATE.search(key):
        raise Problem(f"key is not valid Unicode (it holds a lone surrogate): {key!r:.80}")
    return key


def to_float(value: Any) -> float:
    """A metric value as float: numbers, numpy/torch/jax scalars; else :class:`Problem`."""
    t = type(value)
    if t is float:
        return value
    if t is int or t is bool:
        try:
            return float(value)
        except OverflowError:
            raise Problem(f"integer of {value.bit_length()} bits is too large for a float metric") from None
    item = getattr(value, "item", None)
    if item is not None and callable(item):
        size = getattr(value, "size", None)
        numel = getattr(value, "numel", None)
        n = numel() if callable(numel) else size
        if n is not None and not callable(n) and n != 1:
            raise Problem(f"metric value must be a scalar, got {t.__name__} of {n} elements")
        try:
            out = item()
        except Exception as exc:  # a tensor library's own error
            raise Problem(f"cannot read scalar from {t.__name__}: {exc}") from exc
        if isinstance(out, (int, float)) and not isinstance(out, complex):
            return float(out)
        raise Problem(f"metric value must be numeric, got {t.__name__} holding {out!r:.80}")
    if isinstance(value, (int, float)):  # subclasses, e.g. numpy.float64 is a float subclass
        try:
            return float(value)
        except OverflowError:
            raise Problem(f"{t.__name__} value is too large for a float metric") from None
    raise Problem(f"metric value must be numeric, got {t.__name__} {value!r:.80}")


def _default(obj: Any) -> Any:
    item = getattr(obj, "item", None)
    if callable(item):
        try:
            return item()
        except Exception:
            pass
    tolist = getattr(obj, "tolist", None)
    if callable(tolist):
        return tolist()
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def to_json(value: Any, on_problem: Callable[[str], None]) -> str:
    """Encode a param/config/summary value as JSON; unencodable -> repr, reported."""
    try:
        text = json.dumps(value, default=_default, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError) as exc:
        on_problem(f"value is not JSON-serializable ({exc}); stored as its repr string")
        try:
            text = repr(value)
        except Exception:  # a broken __repr__
            text = f"<unrepresentable {type(value).__name__}>"
        text = json.dumps(text[:100_000], ensure_ascii=False)
    text, changed = clean_text(text)
    if changed:
        on_problem("text is not valid Unicode (lone surrogates); each replaced by U+FFFD")
    return text


def report(call: str, problem: str, strict: bool, stacklevel: int = 4) -> None:
    """Raise (strict) or warn about a refused or normalized input."""
    message = f"bridge: {call}: {problem}"
    if strict:
        raise InvalidValueError(message)
    warnings.warn(message, BridgeWarning, stacklevel=stacklevel)
