"""Metadata filters: a small JSON form, checked against an index's stored fields and compiled to a
Milvus boolean expression, so the filter runs inside the vector search (not after it).

    {"category": "shoes"}                               equality
    {"price": {"gte": 10, "lt": 50}}                    ranges: eq ne gt gte lt lte
    {"category": {"in": ["shoes", "boots"]}}            membership
    {"and": [f, ...]}  {"or": [f, ...]}  {"not": f}     combinators (several keys in one object: and)

Values are checked against the field's declared type (str, int, float, bool); an unknown field or
a value of the wrong type is a BadInput naming the field. ``id`` (the document id) is always there.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Literal

from mmsearch.errors import BadInput

FieldType = Literal["str", "int", "float", "bool"]
FIELD_TYPES: tuple[str, ...] = ("str", "int", "float", "bool")
FIELD_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
DOC_FIELD = "mmsearch_doc"  # the whole document, kept beside the vector (clients/vectors.py): not a field to filter on
RESERVED_FIELDS = frozenset({"id", "embedding", DOC_FIELD, "and", "or", "not"})
OPERATORS = {"eq": "==", "ne": "!=", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
MAX_TERMS = 64
MAX_DEPTH = 8
MAX_IN = 1024
MAX_STR = 512


def parse_field_spec(spec: str) -> tuple[str, FieldType]:
    """``name:type`` (the CLI's ``--field``) -> (name, type); names what is wrong otherwise."""
    name, sep, ftype = spec.partition(":")
    if not sep:
        raise BadInput(f"--field {spec!r}: expected name:type with type one of {', '.join(FIELD_TYPES)}")
    check_field_name(name)
    if ftype not in FIELD_TYPES:
        raise BadInput(f"--field {spec!r}: type {ftype!r} is not one of {', '.join(FIELD_TYPES)}")
    return name, ftype  # type: ignore[return-value]


def check_field_name(name: str) -> str:
    if not FIELD_NAME_RE.match(name) or name in RESERVED_FIELDS:
        raise BadInput(f"field {name!r}: names are letters, digits and _ (not starting with a digit, at most 64), "
                       f"and not one of {', '.join(sorted(RESERVED_FIELDS))}")
    return name


def check_value(field: str, ftype: str, value: Any, where: str) -> Any:
    """The value if it fits the field's type, else BadInput naming ``where``."""
    ok = {
        "str": isinstance(value, str) and len(value) <= MAX_STR and _utf8(value),
        "int": isinstance(value, int) and not isinstance(value, bool) and -(2**63) < value < 2**63,
        "float": isinstance(value, (int, float)) and not isinstance(value, bool) and _finite(value),
        "bool": isinstance(value, bool),
    }[ftype]
    if not ok:
        shown = json.dumps(value)[:80] if _jsonable(value) else type(value).__name__
        extra = f" of at most {MAX_STR} characters" if ftype == "str" and isinstance(value, str) else ""
        raise BadInput(f"{where}: field {field} holds {ftype}{extra} values, got {shown}")
    return float(value) if ftype == "float" else value


def _finite(value: float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


def _utf8(value: str) -> bool:
    try:
        value.encode("utf-8")  # a lone surrogate cannot travel to Milvus
        return True
    except UnicodeEncodeError:
        return False


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
        return True
    except (TypeError, ValueError):
        return False


def quote(value: str) -> str:
    """A Milvus string literal: double quotes, with quotes, backslashes and control characters escaped
    (ids and filter values may hold any of them)."""
    return json.dumps(value, ensure_ascii=False)


def _literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return quote(value)
    return repr(value)


class _Compiler:
    def __init__(self, fields: dict[str, str]):
        self.fields = {"id": "str", **fields}
        self.terms = 0

    def node(self, f: Any, where: str, depth: int) -> str:
        if depth > MAX_DEPTH:
            raise BadInput(f"{where}: nested deeper than {MAX_DEPTH}")
        if not isinstance(f, dict) or not f:
            raise BadInput(f"{where}: expected a non-empty object of field conditions")
        parts = [self.key(k, v, where, depth) for k, v in f.items()]
        return parts[0] if len(parts) == 1 else "(" + " and ".join(parts) + ")"

    def key(self, k: str, v: Any, where: str, depth: int) -> str:
        if k in ("and", "or"):
            if not isinstance(v, list) or not v:
                raise BadInput(f"{where}.{k}: expected a non-empty list of filters")
            return "(" + f" {k} ".join(self.node(x, f"{where}.{k}[{i}]", depth + 1) for i, x in enumerate(v)) + ")"
        if k == "not":
            return f"not ({self.node(v, f'{where}.not', depth + 1)})"
        ftype = self.fields.get(k)
        if ftype is None:
            stored = ", ".join(sorted(self.fields))
            raise BadInput(f"{where}.{k}: unknown field (this index stores: {stored})")
        if not isinstance(v, dict):
            return self.compare(k, ftype, "eq", v, f"{where}.{k}")
        if not v:
            raise BadInput(f"{where}.{k}: empty condition")
        out = []
        for op, x in v.items():
            if op == "in":
                if not isinstance(x, list) or not x or len(x) > MAX_IN:
                    raise BadInput(f"{where}.{k}.in: expected a list of 1..{MAX_IN} values")
                vals = [_literal(check_value(k, ftype, y, f"{where}.{k}.in[{i}]")) for i, y in enumerate(x)]
                self.count(where)
                out.append(f"{k} in [{', '.join(vals)}]")
            elif op in OPERATORS:
                out.append(self.compare(k, ftype, op, x, f"{where}.{k}.{op}"))
            else:
                raise BadInput(f"{where}.{k}.{op}: unknown operator (use {', '.join([*OPERATORS, 'in'])})")
        return out[0] if len(out) == 1 else "(" + " and ".join(out) + ")"

    def compare(self, k: str, ftype: str, op: str, x: Any, where: str) -> str:
        if ftype == "bool" and op not in ("eq", "ne"):
            raise BadInput(f"{where}: field {k} is bool: only eq and ne apply")
        self.count(where)
        return f"{k} {OPERATORS[op]} {_literal(check_value(k, ftype, x, where))}"

    def count(self, where: str) -> None:
        self.terms += 1
        if self.terms > MAX_TERMS:
            raise BadInput(f"{where}: more than {MAX_TERMS} conditions")


def compile_filter(f: dict[str, Any] | None, fields: dict[str, str], where: str = "filter") -> str:
    """A Milvus expression for the JSON filter ``f`` over an index storing ``fields`` (name -> type);
    an empty string for no filter."""
    if f is None:
        return ""
    return _Compiler(fields).node(f, where, 1)


def combine(*exprs: str) -> str:
    """AND of the non-empty Milvus expressions (an arm's own filter and the request's)."""
    parts = [e for e in exprs if e]
    return parts[0] if len(parts) == 1 else " and ".join(f"({e})" for e in parts)
