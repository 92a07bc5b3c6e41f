"""Neptune field paths: which bridge keys may become which Neptune fields.

Kept apart from the adapter because it is the one place that decides whether two distinct
bridge keys could end up in one Neptune field; the adapter asks it per event.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Sequence

__all__ = ["PathRefused", "Paths", "collisions", "empty_segments"]


class PathRefused(Exception):
    """A path Neptune would rewrite or merge; the message is the dead letter's reason."""


# --------------------------------------------------------------------------- path rules
#
# neptune 1.x turns a field path into its non-empty "/"-separated segments
# (``neptune.internal.utils.paths.parse_path``): ``a//b`` -> ``a/b``, ``/lead`` -> ``lead``,
# ``trail/`` -> ``trail``, and ``""`` or ``"/"`` -> the run's root. It rewrites nothing else
# (spaces, ``.``, ``\\``, any length pass as they are). Two bridge keys therefore land in one
# Neptune field only through empty segments or through "/" nesting (metric ``a`` and metric
# ``a/b``; param ``a/b`` and param ``a`` = ``{"b": ...}``; metric ``parameters/lr`` and
# param ``lr``). The adapter refuses, per event and with a reason (a dead letter):
#
# * a key (or a nested dict key, or an artifact member path) with an empty segment;
# * a field another bridge key of the run already writes (the first one wins; the owner of
#   every field is kept in ``run.state["paths"]`` so later sessions know it);
# * a field that would turn an existing field into a namespace or the reverse (Neptune holds
#   a path as one or the other), e.g. metric ``k`` after metric ``k/x``.
# Distinct fields under one prefix stay allowed (param ``a/b`` = 1 next to param ``a`` =
# ``{"c": 2}``), so a Neptune run imported by bridge exports back to the same fields.


def empty_segments(text: str, what: str) -> str | None:
    """The reason ``text`` cannot be a Neptune path (part), or None."""
    if not isinstance(text, str):
        return f"{what} {text!r} is not a string"
    if text == "" or text.strip("/") == "":
        return (f"{what} {text!r}: an empty path is Neptune's run root, not a field "
                "(neptune's parse_path keeps only non-empty '/' segments)")
    if text.startswith("/") or text.endswith("/") or "//" in text:
        stored = "/".join(p for p in text.split("/") if p)
        return (f"{what} {text!r} has an empty path segment (a leading, trailing or doubled "
                f"'/'); Neptune drops empty segments and would store it as {stored!r}, merged "
                "with any key written that way")
    return None


def _prefixes(path: str) -> Iterator[str]:
    """``a/b/c`` -> ``a``, ``a/b`` (the namespaces that hold it)."""
    i = path.find("/")
    while i != -1:
        yield path[:i]
        i = path.find("/", i + 1)


def collisions(paths: Sequence[str]) -> str | None:
    """Two leaves of one event that Neptune cannot both hold, or None."""
    seen: set[str] = set()
    for p in paths:
        if p in seen:
            return f"two values would share the Neptune field {p!r}"
        seen.add(p)
    for p in paths:
        for ns in _prefixes(p):
            if ns in seen:
                return f"{ns!r} would be both a field and the namespace of {p!r}"
    return None


_UNKNOWN = ""  # owner of a field found in an op log or an older state: not recorded


def _who(owner: str | None) -> str:
    return owner or "an earlier session (owner not recorded)"


@dataclass
class Paths:
    """Which bridge key owns which Neptune field of a run (see "path rules" above)."""

    owners: dict[str, str]  # field path -> owner label ("metric 'k/x'"); run.state["paths"]
    unknown: set[str] = field(default_factory=set)  # fields of the op log / older states
    ns: dict[str, str] = field(default_factory=dict)  # namespace -> one field inside it

    def __post_init__(self) -> None:
        for path in list(self.owners) + list(self.unknown):
            self._index(path)

    def _index(self, path: str) -> None:
        for ns in _prefixes(path):
            self.ns.setdefault(ns, path)

    def owner_of(self, path: str) -> str | None:
        if path in self.owners:
            return self.owners[path]
        return _UNKNOWN if path in self.unknown else None

    def conflict(self, path: str, owner: str) -> str | None:
        """Why ``owner`` may not write the field ``path``, or None."""
        held = self.owners.get(path)
        if held is not None and held != owner:
            return (f"the Neptune field {path!r} already holds {held}; Neptune would merge "
                    "the two keys into one field")
        for ns in _prefixes(path):
            other = self.owner_of(ns)
            if other is not None:
                return (f"{path!r} would turn the Neptune field {ns!r} of {_who(other)} into a "
                        "namespace; Neptune holds a path as a field or as a namespace, never both")
        inner = self.ns.get(path)
        if inner is not None:
            return (f"{path!r} is a Neptune namespace holding {inner!r} of "
                    f"{_who(self.owner_of(inner))}; Neptune holds a path as a field or as a "
                    "namespace, never both")
        return None

    def claim(self, owner: str, paths: Sequence[str]) -> None:
        for path in paths:
            if path not in self.owners:
                self.owners[path] = owner
                self.unknown.discard(path)
                self._index(path)
