"""Does a config value fit a parameter's annotation, and if not, what was expected, in words.

:mod:`asrkit.config_check` asks this of every value it checks. pydantic does the fitting, in lax mode (an int
where a float is expected is fine), but the value must come back as the same kind it went in: instantiate passes
the config's value, not pydantic's, so "5" is never taken for 5 nor "yes" for true.
"""

from __future__ import annotations

import inspect
import os
import re
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, Union

from pydantic import ConfigDict, TypeAdapter, ValidationError

LAX = ConfigDict(arbitrary_types_allowed=True)  # a class pydantic does not know is checked with isinstance
PLAIN_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string", type(None): "null"}


def parameter_hints(obj: Any) -> dict[str, Any]:
    """The resolved annotations of ``obj``'s parameters; one that cannot be resolved is left out."""
    function = inspect.unwrap(obj.__init__ if isinstance(obj, type) else obj)
    try:
        return typing.get_type_hints(function)
    except Exception:  # a name only imported for type checkers: resolve each annotation on its own
        hints = {}
        for name, annotation in getattr(function, "__annotations__", {}).items():
            if isinstance(annotation, str):
                try:
                    annotation = eval(annotation, getattr(function, "__globals__", {}))
                except Exception:
                    continue
            hints[name] = annotation
        return hints


def value_problem(key: str, value: Any, annotation: Any, declared: str) -> str | None:
    """``<key>=<value>: expected <what the annotation takes, in words> (<declared>: <annotation>)``, or None when
    ``value`` fits ``annotation`` as it is (or the annotation has no schema to check it against)."""
    try:
        adapter = TypeAdapter(annotation, config=LAX)
    except Exception:
        return None  # no schema for this annotation (an arbitrary generic, a forward reference): not checked
    try:
        fits = _same_kind(value, adapter.validate_python(value))
    except ValidationError:
        fits = False
    if fits:
        return None
    return f"{key}={value!r}: expected {_describe(annotation)} ({declared}: {_type_name(annotation)})"


def _same_kind(value: Any, result: Any) -> bool:
    """Whether pydantic accepted ``value`` as it is: lax mode would turn "5" into 5 and "yes" into True, but
    instantiate passes the config's value, not pydantic's."""
    if isinstance(value, bool):
        return isinstance(result, bool)
    if isinstance(value, str):
        return isinstance(result, str | os.PathLike)
    if isinstance(value, float):
        return isinstance(result, float)
    if isinstance(value, int):
        return isinstance(result, int | float) and not isinstance(result, bool)
    if isinstance(value, list | tuple) and isinstance(result, list | tuple) and len(value) == len(result):
        return all(map(_same_kind, value, result))
    if isinstance(value, dict) and isinstance(result, Mapping):
        return all(_same_kind(item, result[key]) for key, item in value.items() if key in result)
    return True


def _members(annotation: Any) -> tuple[Any, ...]:
    if typing.get_origin(annotation) in (Union, types.UnionType):
        return tuple(m for arg in typing.get_args(annotation) for m in _members(arg))
    return (annotation,)


def _describe(annotation: Any) -> str:
    """What a value of ``annotation`` is, in words: "an integer", "one of 32-true, bf16-mixed or null"."""
    members = _members(annotation)
    literals = dict.fromkeys(str(v) for m in members if typing.get_origin(m) is Literal for v in typing.get_args(m))
    words = [f"one of {', '.join(literals)}"] if literals else []
    for member in members:
        if typing.get_origin(member) is Literal or member is type(None):
            continue
        origin = typing.get_origin(member) or member
        if member in PLAIN_NAMES:
            word = PLAIN_NAMES[member]
        elif isinstance(origin, type) and issubclass(origin, Mapping):
            word = "a mapping"
        elif isinstance(origin, type) and issubclass(origin, list | tuple | set):
            word = "a list"
        else:
            word = f"a {_type_name(member)}"
        if word not in words:
            words.append(word)
    if type(None) in members:
        words.append("null")
    return " or ".join(words)


def _type_name(annotation: Any) -> str:
    """The annotation as its source would write it, module paths left out: ``int | None``."""
    members = _members(annotation)
    if len(members) > 1:
        return " | ".join(_type_name(m) for m in members)
    if annotation is type(None):
        return "None"
    if isinstance(annotation, type) and not typing.get_args(annotation):
        return annotation.__name__
    return re.sub(r"\b(?:[A-Za-z_]\w*\.)+(?=[A-Za-z_])", "", str(annotation))
