"""Command-line options generated from a settings dataclass, so that a setting's name,
type, default and help are written once, beside the field (cleanrl's ``Args``).

    @dataclass(frozen=True)
    class Args:
        budget: int = option(30, "profiles per attack")
        reward: Literal["hit", "rank"] = option("hit", "hit: in the top-k; rank: its position")

    add_options(parser, Args)            # --budget BUDGET, --reward {hit,rank}
    args = from_options(Args, parser.parse_args())

The option is the field's name in kebab case (``flag`` renames it), its destination the
field's name; its type, choices (a ``Literal``) and ``nargs`` (a ``tuple[X, ...]``) come
from the annotation; a field without a default is required; a ``bool`` is ``--name``
when off by default, ``--name/--no-name`` when on; a field holding a dataclass adds that
dataclass's options.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")
# the keys of a field's metadata
HELP, FLAG, CHOICES, METAVAR, PARSE = "help", "flag", "choices", "metavar", "parse"


def option(
    default: Any = dataclasses.MISSING,
    help: str = "",
    *,
    factory: Callable[[], Any] | Any = dataclasses.MISSING,
    flag: str | None = None,
    choices: Sequence[Any] | None = None,
    metavar: str | None = None,
    parse: Callable[[str], Any] | None = None,
) -> Any:
    """A dataclass field with its command-line help; ``flag``, ``choices``, ``metavar``
    and ``parse`` (the text's parser) when the annotation does not say them."""
    if not help:
        raise TypeError("an option needs its help text")
    metadata = {HELP: help, FLAG: flag, CHOICES: choices, METAVAR: metavar, PARSE: parse}
    return dataclasses.field(default=default, default_factory=factory, metadata=metadata)


def flag_of(field: dataclasses.Field[Any]) -> str:
    return field.metadata.get(FLAG) or "--" + field.name.replace("_", "-")


def add_options(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    cls: type[DataclassInstance],
    *,
    exclude: Collection[str] = (),
    only: Collection[str] | None = None,
    defaults: Mapping[str, Any] | None = None,
) -> None:
    """One option per field of ``cls`` (not those in ``exclude``; only those in ``only``);
    ``defaults`` replaces a field's default in this parser (a command's own, like its
    output folder)."""
    defaults = defaults or {}
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        if field.name in exclude or (only is not None and field.name not in only):
            continue
        hint = hints[field.name]
        default = defaults.get(field.name, _default_of(field))
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            # the nested settings' defaults are those of the instance this field holds
            nested = {f.name: getattr(default, f.name) for f in dataclasses.fields(default)}
            add_options(parser, hint, defaults={**nested, **defaults})
            continue
        if HELP not in field.metadata:
            raise TypeError(f"{cls.__name__}.{field.name} has no help: declare it with option()")
        parser.add_argument(flag_of(field), **_argument(field, hint, default))


def from_options(cls: type[T], args: argparse.Namespace, **given: Any) -> T:
    """``cls`` from the parsed options: ``given`` fields as they are, the others from
    their option when the parser has it, else their default."""
    hints = typing.get_type_hints(cls)
    values = dict(given)
    for field in dataclasses.fields(cls):
        hint = hints[field.name]
        if field.name in given:
            continue
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            values[field.name] = from_options(hint, args)
        elif hasattr(args, field.name):
            value = getattr(args, field.name)
            values[field.name] = tuple(value) if typing.get_origin(hint) is tuple else value
    return cls(**values)


def _default_of(field: dataclasses.Field[Any]) -> Any:
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return field.default


def _argument(field: dataclasses.Field[Any], hint: Any, default: Any) -> dict[str, Any]:
    """``add_argument``'s keywords for ``field``, annotated ``hint``."""
    meta = field.metadata
    kwargs: dict[str, Any] = {"dest": field.name, "help": meta[HELP]}
    if default is dataclasses.MISSING:
        kwargs["required"] = True
    else:
        kwargs["default"] = list(default) if isinstance(default, tuple) else default
    if hint is bool:
        kwargs["action"] = argparse.BooleanOptionalAction if default else "store_true"
        return kwargs
    kwargs.update(typed(hint, field.name, meta.get(PARSE)))
    if meta.get(CHOICES) is not None:
        kwargs["choices"] = meta[CHOICES]
    if meta.get(METAVAR) is not None:
        kwargs["metavar"] = meta[METAVAR]
    return kwargs


def typed(hint: Any, name: str, parse: Callable[[str], Any] | None = None) -> dict[str, Any]:
    """``add_argument``'s ``type``, ``choices`` (a ``Literal``) and ``nargs`` (a ``tuple``)
    for a value annotated ``hint`` (``parse``: its own parser of the text)."""
    kwargs: dict[str, Any] = {}
    if typing.get_origin(hint) is tuple:
        kwargs["nargs"] = "+"
        hint = typing.get_args(hint)[0]
    hint = _without_none(hint)
    if typing.get_origin(hint) is Literal:
        kwargs["choices"] = typing.get_args(hint)
        hint = type(kwargs["choices"][0])
    kwargs["type"] = parse or _parser_of(hint, name)
    return kwargs


def _without_none(hint: Any) -> Any:
    """``X`` of ``X | None``."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        kinds = [kind for kind in typing.get_args(hint) if kind is not type(None)]
        if len(kinds) == 1:
            return kinds[0]
    return hint


def _parser_of(hint: Any, name: str) -> Callable[[str], Any]:
    if hint in (int, float, str, Path):
        return hint
    raise TypeError(f"no command-line option for {name}: {hint}; give it parse=")


def positive(text: str) -> int:
    """An option's parser: a count of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def seconds(text: str) -> float:
    """An option's parser: a duration, 0 or more seconds."""
    value = float(text)
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of seconds, 0 or more, got {text}")
    return value
