"""Kubernetes label selectors, compiled once into a cheap matcher.

`LabelSelector.from_spec({"matchLabels": {...}, "matchExpressions": [...]})` follows the API
semantics: an empty selector matches everything; `None` (absent) is represented by the caller.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["EVERYTHING", "LabelSelector"]

_EMPTY: Mapping[str, str] = {}


class LabelSelector:
    """matchLabels AND matchExpressions (In, NotIn, Exists, DoesNotExist)."""

    __slots__ = ("_equal", "_exprs", "_sig")

    def __init__(self, match_labels: Mapping[str, str] | None = None,
                 expressions: Iterable[tuple[str, str, frozenset[str]]] = ()) -> None:
        self._equal = tuple(sorted((match_labels or {}).items()))
        self._exprs = tuple(expressions)
        self._sig = (self._equal, self._exprs)

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any] | None) -> LabelSelector:
        """Compile a `metav1.LabelSelector` JSON object (None or {} matches everything)."""
        if not spec:
            return EVERYTHING
        exprs = []
        for e in spec.get("matchExpressions") or ():
            exprs.append((e.get("key", ""), e.get("operator", ""),
                          frozenset(e.get("values") or ())))
        return cls(spec.get("matchLabels") or None, exprs)

    @classmethod
    def from_parts(cls, labels: Mapping[str, str] | None, exprs: Iterable[Any]) -> LabelSelector:
        """From config-style parts: labels and objects with key/operator/values attributes."""
        return cls(labels, [(e.key, e.operator, frozenset(e.values)) for e in exprs])

    @property
    def empty(self) -> bool:
        """True when the selector matches every object."""
        return not self._equal and not self._exprs

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        """Whether an object with these labels is selected."""
        labels = labels or _EMPTY
        for key, value in self._equal:
            if labels.get(key) != value:
                return False
        for key, op, values in self._exprs:
            present = key in labels
            if op == "In":
                if not present or labels[key] not in values:
                    return False
            elif op == "NotIn":
                if present and labels[key] in values:
                    return False
            elif op == "Exists":
                if not present:
                    return False
            elif op == "DoesNotExist":
                if present:
                    return False
            else:  # unknown operators select nothing, as the API server would reject them
                return False
        return True

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LabelSelector) and other._sig == self._sig

    def __hash__(self) -> int:
        return hash(self._sig)

    def __repr__(self) -> str:
        return f"LabelSelector({dict(self._equal)!r}, {list(self._exprs)!r})"


EVERYTHING = LabelSelector()
