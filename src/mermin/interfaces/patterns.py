"""Interface name patterns: globs and `/regex/`, include and exclude, compiled once.

Syntax (see docs/interfaces.md):

* glob, matched against the whole name: `*` any run of characters, `?` one character,
  `[abc]` / `[a-z]` a set, `[!a-z]` or `[^a-z]` its complement, `{veth,cali}*` alternatives
  (may nest), `\\x` a literal x.
* `/regex/`: a Python regular expression searched anywhere in the name (like Go's
  `MatchString`, which NetObserv uses for the same syntax); anchor it with `^...$`.
* an entry starting with `!` is an exclusion (`"!veth-skip*"`), the same as listing it under
  `exclude`. Exclusion always wins over inclusion.

Matching is case-sensitive, as Linux interface names are. A bad pattern raises `ValueError` with
the pattern in the message, so config validation can point at it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mermin.config.discovery import InstrumentConfig

__all__ = [
    "DEFAULT_INTERFACE_PATTERNS",
    "MAX_PATTERN_LENGTH",
    "InterfaceMatcher",
    "check_pattern",
    "compile_pattern",
    "glob_to_regex",
    "split_patterns",
]

MAX_PATTERN_LENGTH = 256
"""Longest accepted pattern (the original's limit): names themselves are at most 15 bytes."""

DEFAULT_INTERFACE_PATTERNS: tuple[str, ...] = (
    "veth*",  # host end of pod veth pairs (kindnet, bridge CNI, flannel, many others)
    "tunl*",  # Calico IP-in-IP
    "ip6tnl*",  # IPv6 tunnels
    "vxlan*",  # VXLAN overlays
    "flannel*",  # flannel.1 (VXLAN backend)
    "cali*",  # Calico pod interfaces
    "cilium_*",  # Cilium host/overlay devices
    "lxc*",  # Cilium pod interfaces
    "gke*",  # GKE pod interfaces
    "eni*",  # AWS VPC CNI pod interfaces
    "azure*",  # Azure CNI
    "ovn-k8s*",  # OVN-Kubernetes
)
"""The original's default list. Physical NICs (eth*, ens*, ...) are deliberately absent: traffic
between pods of one node already crosses two pod interfaces, and node-to-node traffic of a pod
crosses its pod interface, so adding the NIC would mostly see the same packets again (and host
traffic that is not pod traffic)."""

_CACHE_LIMIT = 65536


def glob_to_regex(glob: str) -> str:
    """Translate a glob into an anchored regular expression (raises ValueError when malformed)."""
    body, end = _translate(glob, 0, depth=0)
    if end != len(glob):  # only a stray '}' or ',' at top level can stop the walk early
        raise ValueError(f"unbalanced '{glob[end]}' at position {end}")
    return rf"\A(?:{body})\Z"


def _translate(glob: str, pos: int, depth: int) -> tuple[str, int]:
    """Translate from `pos` until the end, or until a ',' or '}' that closes an enclosing brace."""
    out: list[str] = []
    n = len(glob)
    while pos < n:
        c = glob[pos]
        if c == "*":
            out.append(".*")
            pos += 1
        elif c == "?":
            out.append(".")
            pos += 1
        elif c == "[":
            cls, pos = _translate_class(glob, pos)
            out.append(cls)
        elif c == "{":
            if depth >= 8:
                raise ValueError("braces nested too deeply")
            alternatives: list[str] = []
            pos += 1
            while True:
                alt, pos = _translate(glob, pos, depth + 1)
                alternatives.append(alt)
                if pos >= n:
                    raise ValueError("unclosed '{'")
                if glob[pos] == "}":
                    pos += 1
                    break
                pos += 1  # ','
            out.append("(?:" + "|".join(alternatives) + ")")
        elif c in ",}" and depth > 0:
            break
        elif c == "}":
            raise ValueError(f"unbalanced '}}' at position {pos}")
        elif c == "\\":
            if pos + 1 >= n:
                raise ValueError("pattern ends with a lone backslash")
            out.append(re.escape(glob[pos + 1]))
            pos += 2
        else:
            out.append(re.escape(c))
            pos += 1
    return "".join(out), pos


def _translate_class(glob: str, pos: int) -> tuple[str, int]:
    """Translate `[...]` starting at `pos` (the '['); return the regex class and the next pos."""
    i = pos + 1
    negate = i < len(glob) and glob[i] in "!^"
    if negate:
        i += 1
    members: list[str] = []
    first = True
    while i < len(glob):
        c = glob[i]
        if c == "]" and not first:
            if not members:
                raise ValueError(f"empty character set at position {pos}")
            return "[" + ("^" if negate else "") + "".join(members) + "]", i + 1
        if c == "\\" and i + 1 < len(glob):
            c = glob[i + 1]
            i += 1
        if i + 2 < len(glob) and glob[i + 1] == "-" and glob[i + 2] != "]":
            lo, hi = c, glob[i + 2]
            if lo > hi:
                raise ValueError(f"bad range {lo}-{hi} at position {i}")
            members.append(re.escape(lo) + "-" + re.escape(hi))
            i += 3
        else:
            members.append(re.escape(c))
            i += 1
        first = False
    raise ValueError(f"unclosed '[' at position {pos}")


def _is_regex(pattern: str) -> bool:
    return len(pattern) >= 2 and pattern.startswith("/") and pattern.endswith("/")


def compile_pattern(pattern: str) -> Callable[[str], bool]:
    """Compile one include pattern (glob or /regex/, without a '!' prefix) into a predicate."""
    if not isinstance(pattern, str):
        raise ValueError(f"interface pattern must be a string, got {type(pattern).__name__}")
    if not pattern.strip():
        raise ValueError("empty interface pattern")
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise ValueError(
            f"interface pattern {pattern[:32]!r}... is {len(pattern)} characters long "
            f"(at most {MAX_PATTERN_LENGTH})"
        )
    if _is_regex(pattern):
        body = pattern[1:-1]
        if not body:
            raise ValueError(f"empty regular expression in interface pattern {pattern!r}")
        try:
            rx = re.compile(body)
        except re.error as err:
            raise ValueError(
                f"invalid regular expression in interface pattern {pattern!r}: {err}"
            ) from None
        return lambda name: rx.search(name) is not None
    try:
        rx = re.compile(glob_to_regex(pattern))
    except (ValueError, re.error) as err:
        raise ValueError(
            f"invalid glob in interface pattern {pattern!r}: {err} "
            "(write a literal character with a backslash, e.g. '\\[', or use /regex/)"
        ) from None
    return lambda name: rx.match(name) is not None


def check_pattern(pattern: str) -> None:
    """Validate one config entry (may start with '!'); raises ValueError naming the pattern."""
    if isinstance(pattern, str) and pattern.startswith("!"):
        compile_pattern(pattern[1:])
    else:
        compile_pattern(pattern)


def split_patterns(entries: Iterable[str]) -> tuple[list[str], list[str]]:
    """Split config entries into (includes, excludes): '!pattern' entries are exclusions."""
    includes: list[str] = []
    excludes: list[str] = []
    for entry in entries:
        if entry.startswith("!"):
            excludes.append(entry[1:])
        else:
            includes.append(entry)
    return includes, excludes


class InterfaceMatcher:
    """Decides whether an interface name is instrumented. Immutable; results are cached."""

    __slots__ = ("_cache", "_excludes", "_includes", "exclude", "include")

    def __init__(self, include: Iterable[str], exclude: Iterable[str] = ()) -> None:
        inc, neg = split_patterns(include)
        exc_inc, exc_neg = split_patterns(exclude)
        self.include: tuple[str, ...] = tuple(inc)
        # '!x' inside `exclude` would be a double negation: treat it as a plain exclusion of x
        self.exclude: tuple[str, ...] = tuple(dict.fromkeys([*neg, *exc_inc, *exc_neg]))
        self._includes = [compile_pattern(p) for p in self.include]
        self._excludes = [compile_pattern(p) for p in self.exclude]
        self._cache: dict[str, bool] = {}

    @classmethod
    def from_config(cls, config: InstrumentConfig) -> InterfaceMatcher:
        """Build from an `InstrumentConfig` (no include entry -> the default list)."""
        entries = list(config.interfaces)
        includes, _ = split_patterns(entries)
        if not includes:  # nothing to include (empty, or only '!x' entries): defaults apply
            entries = [*DEFAULT_INTERFACE_PATTERNS, *entries]
        return cls(entries, config.exclude)

    def matches(self, name: str) -> bool:
        """True when `name` matches an include pattern and no exclude pattern."""
        hit = self._cache.get(name)
        if hit is None:
            hit = any(p(name) for p in self._includes) and not any(p(name) for p in self._excludes)
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[name] = hit
        return hit

    __call__ = matches

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, InterfaceMatcher):
            return NotImplemented
        return (self.include, set(self.exclude)) == (other.include, set(other.exclude))

    def __hash__(self) -> int:
        return hash((self.include, frozenset(self.exclude)))

    def __repr__(self) -> str:
        return f"InterfaceMatcher(include={list(self.include)}, exclude={list(self.exclude)})"
