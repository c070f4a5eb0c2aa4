"""Read an HCL config file into plain Python values plus the line of every key.

python-hcl2 parses the text (its Lark grammar, with positions); this module walks the raw parse
tree itself instead of using `hcl2.loads`, because that serialiser keeps string quotes, leaves
function calls unevaluated (`"${env(\"X\")}"`) and (in 8.x) ignores `with_meta`, so it cannot
tell us lines. Walking the tree gives exact values and lines in one pass.

Mapping to nested dicts (as the original's hcl-rs does):

    log_level = "info"                      {"log_level": "info"}
    pipeline { flow_capture { ... } }       {"pipeline": {"flow_capture": {...}}}
    discovery "instrument" { ... }          {"discovery": {"instrument": {...}}}
    attributes "source" "k8s" { ... }       {"attributes": {"source": {"k8s": {...}}}}

A block repeated with the same name and labels becomes a list of its bodies. The only function
is `env("VAR")` / `env("VAR", "default")`, also inside string interpolation ("${env("X")}");
any other function, variable reference or operator is reported as unsupported (a config file
is data, not a program).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from lark import Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from mermin.errors import ConfigError

__all__ = ["Lines", "Path", "read_hcl"]

Path = tuple[str | int, ...]
Lines = dict[Path, int]

_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", '"': '"', "\\": "\\"}
_ESCAPE_RE = re.compile(r"\\(u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|.)", re.S)
_HEREDOC_RE = re.compile(r"<<(-?)([A-Za-z][A-Za-z0-9._-]*)\r?\n(.*?)^[ \t]*\2\r?\n?\Z", re.S | re.M)


class _Problem(Exception):
    """A mistake at a known line; turned into a ConfigError with the file name."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


def read_hcl(text: str, name: str, environ: Mapping[str, str] | None = None) -> tuple[dict, Lines]:
    """Parse HCL `text` (from file `name`) into nested dicts and a key-path -> line map.

    Raises ConfigError ("name:line: ...") for a syntax error or an unsupported expression.
    """
    from hcl2.api import parses_to_tree

    try:
        tree = parses_to_tree(text)
    except UnexpectedInput as exc:
        raise ConfigError(f"{name}:{_syntax_message(exc, text)}") from None
    except Exception as exc:  # any parser failure is about the user's file
        raise ConfigError(f"{name}: syntax error: {exc}".splitlines()[0]) from None
    walker = _Walker(os.environ if environ is None else environ)
    try:
        data = walker.body(tree.children[0], ())
    except _Problem as exc:
        raise ConfigError(f"{name}:{exc.line}: {exc.message}") from None
    return data, walker.lines


def _syntax_message(exc: UnexpectedInput, text: str) -> str:
    line = getattr(exc, "line", 0) or 0
    column = getattr(exc, "column", 0) or 0
    if isinstance(exc, UnexpectedToken):
        token = exc.token
        if token.type == "$END":
            what, line, column = "unexpected end of file", text.count("\n") + 1, 0
        elif not str(token).strip():
            what = "unexpected end of line"
        else:
            what = f"unexpected {str(token).strip()!r}"
        expected = sorted({_TERMINALS[t] for t in exc.expected if t in _TERMINALS})[:6]
        if expected:
            what += "; expected " + " or ".join(expected)
    elif isinstance(exc, UnexpectedCharacters):
        what = f"unexpected character {exc.char!r}"
    elif isinstance(exc, UnexpectedEOF):
        what, line, column = "unexpected end of file", text.count("\n") + 1, 0
    else:
        what = str(exc).splitlines()[0]
    where = f"{line}:{column}" if column else f"{line}"
    return f"{where}: syntax error: {what}"


_TERMINALS = {
    "LBRACE": "'{'", "RBRACE": "'}'", "LSQB": "'['", "RSQB": "']'", "LPAR": "'('",
    "RPAR": "')'", "EQ": "'='", "COLON": "':'", "COMMA": "','", "DBLQUOTE": "'\"'",
    "NAME": "a name", "NL_OR_COMMENT": "a new line", "INT_LITERAL": "a number",
    "FLOAT_LITERAL": "a number", "STRING_CHARS": "text",
}  # fmt: skip


def _line(node: Tree | Token) -> int:
    if isinstance(node, Token):
        return node.line or 0
    return getattr(node.meta, "line", 0) if not node.meta.empty else 0


def _trees(node: Tree) -> list[Tree]:
    """Children that are sub-trees, minus newlines/comments."""
    return [c for c in node.children if isinstance(c, Tree) and c.data != "new_line_or_comment"]


class _Walker:
    """Turns a raw python-hcl2 Lark tree into Python values, recording lines."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ
        self.lines: Lines = {}

    # -- structure ------------------------------------------------------------------------------

    def body(self, node: Tree, path: Path) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for child in _trees(node):
            if child.data == "attribute":
                self._attribute(child, out, path)
            elif child.data == "block":
                self._block(child, out, path)
        return out

    def _attribute(self, node: Tree, out: dict[str, Any], path: Path) -> None:
        parts = _trees(node)
        key, value_node = self._name(parts[0]), parts[-1]
        line = _line(node)
        if key in out:
            first = self.lines.get((*path, key), 0)
            raise _Problem(
                line, f"{_dotted((*path, key))}: duplicate key (first set at line {first})"
            )
        self.lines[(*path, key)] = line
        out[key] = self.value(value_node, (*path, key))

    def _block(self, node: Tree, out: dict[str, Any], path: Path) -> None:
        names: list[str] = []
        body_node = None
        for child in _trees(node):
            if child.data == "body":
                body_node = child
            elif child.data == "string":
                names.append(self._string(child, path))
            else:
                names.append(self._name(child))
        line = _line(node)
        target, here = out, path
        for label in names[:-1]:
            here = (*here, label)
            existing = target.setdefault(label, {})
            if not isinstance(existing, dict):
                raise _Problem(line, f"{_dotted(here)}: block conflicts with a value of that name")
            self.lines.setdefault(here, line)
            target = existing
        last = names[-1]
        here = (*here, last)
        assert body_node is not None
        content = self.body(body_node, here)
        if last in target:
            previous = target[last]
            if isinstance(previous, list):
                previous.append(content)
            else:
                target[last] = [previous, content]
        else:
            target[last] = content
            self.lines[here] = line

    def _name(self, node: Tree) -> str:
        token = node.children[0]
        if isinstance(token, Tree):  # keyword / literal_value used as a name
            token = token.children[0]
        return str(token)

    # -- expressions ----------------------------------------------------------------------------

    def value(self, node: Tree | Token, path: Path) -> Any:
        if isinstance(node, Token):
            raise _Problem(_line(node), f"{_dotted(path)}: unexpected {str(node)!r}")
        kind = node.data
        if kind == "expr_term":
            inner = _trees(node)
            if len(inner) != 1:
                raise _Problem(_line(node), f"{_dotted(path)}: unsupported expression")
            return self.value(inner[0], path)
        handler = getattr(self, "_v_" + str(kind), None)
        if handler is None:
            raise _Problem(
                _line(node),
                f"{_dotted(path)}: unsupported expression ({str(kind).replace('_', ' ')}); "
                'config values are literals, lists, objects and env("VAR", "default")',
            )
        return handler(node, path)

    def _v_identifier(self, node: Tree, path: Path) -> Any:
        name = str(node.children[0])
        raise _Problem(
            _line(node), f'{_dotted(path)}: unquoted name {name}; write strings in quotes: "{name}"'
        )

    def _v_int_lit(self, node: Tree, path: Path) -> int:
        return int(str(node.children[0]))

    def _v_float_lit(self, node: Tree, path: Path) -> float:
        return float(str(node.children[0]))

    def _v_literal_value(self, node: Tree, path: Path) -> Any:
        return {"true": True, "false": False, "null": None}[str(node.children[0])]

    def _v_unary_op(self, node: Tree, path: Path) -> Any:
        operator, operand = str(node.children[0]), node.children[1]
        value = self.value(operand, path)
        if operator == "-" and isinstance(value, int | float) and not isinstance(value, bool):
            return -value
        if operator == "!" and isinstance(value, bool):
            return not value
        raise _Problem(_line(node), f"{_dotted(path)}: cannot apply {operator!r} to {value!r}")

    def _v_string(self, node: Tree, path: Path) -> str:
        return self._string(node, path)

    def _v_heredoc_template(self, node: Tree, path: Path) -> str:
        return self._heredoc(node, path)

    def _v_heredoc_template_trim(self, node: Tree, path: Path) -> str:
        return self._heredoc(node, path)

    def _v_tuple(self, node: Tree, path: Path) -> list[Any]:
        items = _trees(node)
        out = []
        for index, item in enumerate(items):
            self.lines[(*path, index)] = _line(item)
            out.append(self.value(item, (*path, index)))
        return out

    def _v_object(self, node: Tree, path: Path) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for elem in _trees(node):
            key_node, value_node = _trees(elem)[0], _trees(elem)[-1]
            key = self._object_key(key_node, path)
            here = (*path, key)
            if key in out:
                first = self.lines.get(here, 0)
                raise _Problem(
                    _line(elem), f"{_dotted(here)}: duplicate key (first at line {first})"
                )
            self.lines[here] = _line(elem)
            out[key] = self.value(value_node, here)
        return out

    def _object_key(self, node: Tree, path: Path) -> str:
        inner = _trees(node)
        if not inner:  # keyword token used as a key
            return str(node.children[0])
        target = inner[0]
        while target.data == "expr_term" and len(_trees(target)) == 1:
            target = _trees(target)[0]
        if target.data == "identifier":
            return str(target.children[0])
        if target.data == "keyword":
            return self._name(target)
        value = self.value(target, path)
        if not isinstance(value, str | int | float | bool):
            raise _Problem(_line(node), f"{_dotted(path)}: object keys must be names or strings")
        return str(value)

    def _v_function_call(self, node: Tree, path: Path) -> str:
        parts = _trees(node)
        name = str(parts[0].children[0])
        if name != "env":
            raise _Problem(
                _line(node),
                f"{_dotted(path)}: unknown function {name}(); only "
                'env("VAR") and env("VAR", "default") are available',
            )
        args = []
        if len(parts) > 1 and parts[1].data == "arguments":
            args = [self.value(arg, path) for arg in _trees(parts[1])]
        if not 1 <= len(args) <= 2 or not all(isinstance(a, str) for a in args):
            raise _Problem(
                _line(node), f'{_dotted(path)}: use env("VAR") or env("VAR", "default") (strings)'
            )
        value = self.environ.get(args[0])
        if value is not None:
            return value
        if len(args) == 2:
            return args[1]
        raise _Problem(
            _line(node),
            f"{_dotted(path)}: environment variable {args[0]} is not set and env() has no "
            f'default; set it or write env("{args[0]}", "default")',
        )

    # -- strings --------------------------------------------------------------------------------

    def _string(self, node: Tree, path: Path) -> str:
        out: list[str] = []
        for part in node.children:
            if isinstance(part, Token):  # the quotes
                continue
            piece = part.children[0]
            if isinstance(piece, Token):
                if piece.type == "ESCAPED_INTERPOLATION":
                    out.append(str(piece)[1:])  # "$${x}" -> literal "${x}"
                elif piece.type == "ESCAPED_DIRECTIVE":
                    out.append(str(piece)[1:])
                else:
                    out.append(_unescape(str(piece), _line(piece)))
            elif piece.data == "interpolation":
                value = self.value(_trees(piece)[0], path)
                if value is None or isinstance(value, list | dict):
                    raise _Problem(
                        _line(piece),
                        f"{_dotted(path)}: only scalar values can be interpolated into a string",
                    )
                out.append(_interpolated(value))
            else:
                raise _Problem(
                    _line(piece),
                    f"{_dotted(path)}: template directives (%{{...}}) are not supported",
                )
        return "".join(out)

    def _heredoc(self, node: Tree, path: Path) -> str:
        raw = str(node.children[0])
        match = _HEREDOC_RE.match(raw)
        if not match:
            raise _Problem(_line(node), f"{_dotted(path)}: malformed heredoc")
        body = match.group(3)
        if match.group(1):  # <<- strips the common indentation
            lines = body.splitlines(keepends=True)
            indents = [len(x) - len(x.lstrip(" \t")) for x in lines if x.strip()]
            cut = min(indents, default=0)
            body = "".join(x[cut:] for x in lines)
        if "${" in body.replace("$${", ""):
            raise _Problem(
                _line(node), f"{_dotted(path)}: interpolation in heredocs is not supported"
            )
        return body.replace("$${", "${")


def _interpolated(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _unescape(text: str, line: int) -> str:
    def replace(match: re.Match[str]) -> str:
        esc = match.group(1)
        if esc[0] in "uU" and len(esc) > 1:
            return chr(int(esc[1:], 16))
        if esc in _ESCAPES:
            return _ESCAPES[esc]
        raise _Problem(line, f"invalid escape sequence '\\{esc}' in a string")

    return _ESCAPE_RE.sub(replace, text) if "\\" in text else text


def _dotted(path: Path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(root)"
