"""Command-line flags generated from settings dataclasses, so that each setting is written once.

A field declared with `option(...)` becomes a flag: `--field-name` (or the names given), its type check, default,
help and argument group come from the field. Fields without `option` are set by code only. `settings_from` turns the
parsed arguments back into the dataclass.
"""

import argparse
import copy
import dataclasses
from collections.abc import Callable
from typing import Any


def option(
    default: Any = dataclasses.MISSING,
    *,
    help: str,
    flags: tuple[str, ...] = (),
    type: Callable[[str], Any] | None = None,
    choices: tuple | None = None,
    nargs: str | None = None,
    action: str | None = None,
    const: Any = None,
    metavar: str | None = None,
    group: str | None = None,
    exclusive_group: str | None = None,
    positional: bool = False,
    parse: Callable[[Any], Any] | None = None,
) -> Any:
    """A dataclass field that is also a flag. A bool field is a switch (`flags` may name it `--no-...` when its
    default is True); `action="extend"` lets a list flag be repeated; `parse` converts the flag's text after parsing,
    so its ValueError reads as a command error."""
    spec = dict(help=help, flags=flags, type=type, choices=choices, nargs=nargs, action=action, const=const,
                metavar=metavar, group=group, exclusive_group=exclusive_group, positional=positional, parse=parse)
    if isinstance(default, list | dict):  # a mutable default: each settings object gets its own copy
        return dataclasses.field(default_factory=lambda: copy.copy(default), metadata={"flag": spec})
    return dataclasses.field(default=default, metadata={"flag": spec})


def add_flags(parser: argparse.ArgumentParser, settings: type) -> None:
    """Add a flag to `parser` for every `option` field of the `settings` dataclass."""
    groups: dict[str, Any] = {}
    for field in dataclasses.fields(settings):
        spec = field.metadata.get("flag")
        if spec is None:
            continue
        default = _default(field)
        if spec["positional"]:
            names, kwargs = [field.name], ({} if default is dataclasses.MISSING else {"default": default})
        else:
            names = list(spec["flags"]) or [f"--{field.name.replace('_', '-')}"]
            kwargs = dict(dest=field.name, default=default)
            if default is dataclasses.MISSING:
                kwargs.update(required=True, default=None)
            elif spec["parse"]:
                kwargs["default"] = None
        if isinstance(default, bool):
            kwargs["action"] = "store_false" if default else "store_true"
        else:
            passed = ("type", "choices", "nargs", "action", "const", "metavar")
            kwargs.update({key: spec[key] for key in passed if spec[key] is not None})
        _group(parser, groups, spec).add_argument(*names, help=spec["help"], **kwargs)


def settings_from(args: argparse.Namespace, settings: type, **fixed: Any) -> Any:
    """The `settings` dataclass filled from parsed `args` (its `option` fields) and `fixed` (the others)."""
    values = dict(fixed)
    for field in dataclasses.fields(settings):
        spec = field.metadata.get("flag")
        if spec is not None:
            value = getattr(args, field.name)
            if spec["parse"]:
                if value is None:  # flag not given: the field's default
                    continue
                value = spec["parse"](value)
            values[field.name] = value
    return settings(**values)


def _default(field: dataclasses.Field) -> Any:
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return field.default


def _group(parser: argparse.ArgumentParser, groups: dict[str, Any], spec: dict) -> Any:
    """The argument group (or mutually exclusive group) a flag goes in, made on first use."""
    target = parser
    if spec["group"]:
        if spec["group"] not in groups:
            groups[spec["group"]] = parser.add_argument_group(spec["group"])
        target = groups[spec["group"]]
    if spec["exclusive_group"]:
        key = f"exclusive: {spec['exclusive_group']}"
        if key not in groups:
            groups[key] = target.add_mutually_exclusive_group()
        target = groups[key]
    return target


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Show a default only where there is one and the help text does not already describe it."""

    def __init__(self, prog: str):
        super().__init__(prog, max_help_position=34)

    def _get_help_string(self, action: argparse.Action) -> str | None:
        no_default = action.default is None or isinstance(action.default, bool) or action.default in ([], "")
        if no_default or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or a positive integer, got {text}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or a positive number, got {text}")
    return value


def probability(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must lie in (0, 1], got {text}")
    return value
