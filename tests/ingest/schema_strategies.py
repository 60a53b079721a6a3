"""Hypothesis strategies driven by a JSON Schema: values the schema accepts, and values one
mutation away that it refuses.

Covers the keywords ingest's request schema uses (type, enum, const, properties, required,
additionalProperties, items, min/maxItems, min/maxLength, minimum/maximum, anyOf, oneOf,
pattern; ``not`` and the rest only through the final filter). Every value is checked with
``jsonschema`` before it is used, so the strategy can be loose but never wrong.
(hypothesis-jsonschema would be the library for this, but its last release does not run on
the Hypothesis this project installs.)
"""

from __future__ import annotations

import re
from typing import Any

from hypothesis import strategies as st
from jsonschema import Draft202012Validator

Schema = dict[str, Any]


def json_values(*, text: int, keys: int, children: int, leaves: int) -> st.SearchStrategy[Any]:
    """Any JSON value: scalars (strings up to ``text`` characters), lists and objects (keys up
    to ``keys`` characters) of up to ``children`` members, at most ``leaves`` scalars in all."""
    scalars = (
        st.none()
        | st.booleans()
        | st.integers(min_value=-(2**53), max_value=2**53)
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(max_size=text)
    )
    return st.recursive(
        scalars,
        lambda inner: (
            st.lists(inner, max_size=children)
            | st.dictionaries(st.text(max_size=keys), inner, max_size=children)
        ),
        max_leaves=leaves,
    )


JSON_VALUES = json_values(text=12, keys=6, children=3, leaves=8)


def python_patterns(schema: Any) -> Any:
    """The schema with ECMA-262 ``$`` (end of text) written as Python's ``\\Z``: Python's
    ``re`` lets ``$`` match before a final newline, which JSON Schema's patterns do not."""
    if isinstance(schema, dict):
        return {
            key: (
                re.sub(r"\$$", r"\\Z", value)
                if key == "pattern" and isinstance(value, str)
                else python_patterns(value)
            )
            for key, value in schema.items()
        }
    if isinstance(schema, list):
        return [python_patterns(value) for value in schema]
    return schema


def validator(schema: Schema) -> Draft202012Validator:
    return Draft202012Validator(python_patterns(schema))


def valid(schema: Schema) -> st.SearchStrategy[Any]:
    """Values ``schema`` accepts."""
    return _gen(python_patterns(schema)).filter(validator(schema).is_valid)


def _merge(base: Schema, branch: Schema) -> Schema:
    merged = {**base, **branch}
    if "properties" in base and "properties" in branch:
        properties = dict(base["properties"])
        for name, sub in branch["properties"].items():
            properties[name] = {**properties.get(name, {}), **sub}
        merged["properties"] = properties
    if "required" in base and "required" in branch:
        merged["required"] = sorted(set(base["required"]) | set(branch["required"]))
    return merged


def _gen(schema: Schema) -> st.SearchStrategy[Any]:
    for keyword in ("oneOf", "anyOf"):
        if keyword in schema:
            base = {k: v for k, v in schema.items() if k != keyword}
            return st.one_of([_gen(_merge(base, branch)) for branch in schema[keyword]])
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema.get("type")
    if isinstance(kind, list):
        return st.one_of([_gen({**schema, "type": k}) for k in kind])
    if kind == "null":
        return st.none()
    if kind == "boolean":
        return st.booleans()
    if kind == "integer":
        return st.integers(schema.get("minimum", -(2**40)), schema.get("maximum", 2**40))
    if kind == "number":
        low, high = schema.get("minimum"), schema.get("maximum")
        return st.floats(low, high, allow_nan=False, allow_infinity=False) | st.integers(
            -(2**20) if low is None else int(low), 2**20 if high is None else int(high)
        )
    if kind == "string":
        if "pattern" in schema:
            return st.from_regex(schema["pattern"], fullmatch=True)
        low = schema.get("minLength", 0)
        return st.text(min_size=low, max_size=min(schema.get("maxLength", low + 20), low + 20))
    if kind == "array":
        low = schema.get("minItems", 0)
        high = min(schema.get("maxItems", low + 3), low + 3)
        return st.lists(_gen(schema.get("items", {})), min_size=low, max_size=high)
    if kind == "object":
        return _object(schema)
    return JSON_VALUES


def _object(schema: Schema) -> st.SearchStrategy[Any]:
    properties: dict[str, Schema] = schema.get("properties", {})
    required = set(schema.get("required", ()))
    extra = schema.get("additionalProperties", True)
    fixed = st.fixed_dictionaries(
        {name: _gen(properties.get(name, {})) for name in sorted(required)},
        optional={name: _gen(sub) for name, sub in properties.items() if name not in required},
    )
    if extra is False:
        return fixed.filter(lambda value: len(value) <= schema.get("maxProperties", 1 << 30))
    more = st.dictionaries(
        st.text(max_size=8).filter(lambda key: key not in properties),
        JSON_VALUES if extra is True else _gen(extra),
        max_size=3,
    )
    return st.builds(lambda a, b: {**b, **a}, fixed, more)


# --- one mutation away ---------------------------------------------------------------------

_WRONG: st.SearchStrategy[Any] = st.sampled_from(
    [None, True, -58800, 3.5, "x" * 3, [], {}, [{"a": 1}]]
)


@st.composite
def mutated(draw: st.DrawFn, value: Any) -> Any:
    """``value`` with one change somewhere inside: a value replaced by one of another type or
    out of range, a key removed, or an unknown key added."""
    paths = list(_paths(value, ()))
    path = draw(st.sampled_from(paths))
    change = draw(st.sampled_from(["replace", "drop", "add"]))
    return _apply(value, path, change, draw)


def _paths(value: Any, path: tuple[Any, ...]) -> Any:
    yield path
    if isinstance(value, dict):
        for key, sub in value.items():
            yield from _paths(sub, (*path, key))
    elif isinstance(value, list):
        for index, sub in enumerate(value):
            yield from _paths(sub, (*path, index))


def _apply(value: Any, path: tuple[Any, ...], change: str, draw: st.DrawFn) -> Any:
    if not path:
        if change == "add" and isinstance(value, dict):
            return {**value, draw(st.sampled_from(["zz_unknown", "stream", "temperature"])): 9}
        if change == "add" and isinstance(value, list):
            return [*value, draw(_WRONG)]
        return draw(_WRONG)
    head, rest = path[0], path[1:]
    copy: Any = dict(value) if isinstance(value, dict) else list(value)
    if not rest and change == "drop":
        del copy[head]
    else:
        copy[head] = _apply(value[head], rest, change, draw)
    return copy
