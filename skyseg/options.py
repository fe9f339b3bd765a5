"""One options object per stage: defaults and help written once, for Python, CLI and YAML.

A stage's options are a dataclass whose fields are made with :func:`option` (a default and
a one-line help). From that one class come

- the stage's command-line options (:func:`add_options`, read back by :func:`from_args`),
- its section of the pipeline's YAML file (:func:`from_mapping`, with the types checked and
  converted, unknown keys refused with the list of known ones),
- the Python API's keyword arguments (``TrainOptions(epochs=5)``), and
- a plain mapping for ``config.json`` and logs (:func:`to_mapping`), and
- the command line that gives an object back (:func:`to_argv`: what ``skyseg pipeline``
  logs for each step).

Example:
    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class Sizes:
    ...     tile_size: int = option(1088, "tile side in pixels (a multiple of 32)")
    ...     tta: bool = option(False, "average flipped predictions")
    >>> from_mapping(Sizes, {"tile_size": "512", "tta": "yes"}, source="config.yml")
    Sizes(tile_size=512, tta=True)
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import types
import typing
from pathlib import Path

from skyseg.errors import ConfigError

__all__ = ["option", "option_fields", "add_options", "from_args", "from_mapping", "to_mapping",
           "to_argv", "option_flag", "convert_value", "parse_bool"]

_TRUE = {"1", "true", "yes", "on", "y", "t"}
_FALSE = {"0", "false", "no", "off", "n", "f"}
#: What an optional setting that is not text reads as None, on the command line and in YAML.
_NONE = {"none", "null"}


def parse_bool(value, *, name: str = "flag") -> bool:
    """``true/false/yes/no/on/off/1/0`` (any case) -> bool.

    Raises:
        ConfigError: anything else, naming the flag.

    Example:
        >>> parse_bool("False"), parse_bool("1")
        (False, True)
    """
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ConfigError(f"{name} must be true or false, got {value!r}")


def option(default=dataclasses.MISSING, help: str = "", *, flag: str | None = None,
           short: str | None = None, choices=None, metavar: str | None = None,
           cli: bool = True, yaml: bool = True, default_factory=dataclasses.MISSING,
           **argparse_settings):
    """A dataclass field of a stage's options.

    Args:
        default: the default, written here once (or ``default_factory`` for lists/dicts).
        help: one line for ``--help`` and the YAML reference.
        flag: the command-line spelling (default ``--field-name``).
        short: a one-letter alias (``-o``).
        choices, metavar: as in argparse.
        cli: whether the command line has the option.
        yaml: whether the pipeline's YAML file may set it.
        argparse_settings: anything else for ``add_argument`` (``action``, ``nargs``, ``type``).
    """
    metadata = {"help": help, "flag": flag, "short": short, "choices": choices,
                "metavar": metavar, "cli": cli, "yaml": yaml, "argparse": argparse_settings}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def option_fields(cls) -> list[tuple[dataclasses.Field, object]]:
    """The fields of an options class with their resolved types, in order."""
    hints = typing.get_type_hints(cls)
    return [(field, hints[field.name]) for field in dataclasses.fields(cls)]


def _default(field: dataclasses.Field):
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None if field.default is dataclasses.MISSING else field.default


def _base_type(kind):
    """``int | None`` -> (int, True); ``list[str]`` -> (list, False)."""
    if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
        members = [k for k in typing.get_args(kind) if k is not type(None)]
        optional = len(members) < len(typing.get_args(kind))
        return (members[0] if len(members) == 1 else kind), optional
    return kind, False


def convert_value(name: str, value, kind, *, source: str = ""):
    """``value`` (from YAML or the command line) as the field's type.

    Raises:
        ConfigError: a value that is not of the type, naming the source and the key.

    Example:
        >>> convert_value("epochs", "30", int)
        30
        >>> convert_value("sizes", "256, 512", list[int])
        [256, 512]
    """
    where = f"{source}: " if source else ""
    base, optional = _base_type(kind)
    if value is None or (optional and base is not str and isinstance(value, str)
                         and value.strip().lower() in _NONE):
        if optional or base is typing.Any:
            return None
        raise ConfigError(f"{where}{name} needs a value, got nothing")
    try:
        origin = typing.get_origin(base) or base
        if base is bool:
            return parse_bool(value, name=f"{where}{name}")
        if base is int:
            if isinstance(value, bool) or float(value) != int(float(value)):
                raise ValueError(value)
            return int(float(value))
        if base is float:
            if isinstance(value, bool):
                raise ValueError(value)
            return float(value)
        if base is str:
            return str(value)
        if base is Path:
            return Path(os.path.expanduser(str(value)))
        if origin in (list, tuple):
            items = [v.strip() for v in value.split(",") if v.strip()] if isinstance(
                value, str) else list(value)
            (item_kind, *_) = typing.get_args(base) or (typing.Any,)
            converted = [convert_value(name, item, item_kind, source=source) for item in items]
            return converted if origin is list else tuple(converted)
        if origin is dict:
            if not isinstance(value, dict):
                raise ValueError(value)
            key_kind, item_kind = typing.get_args(base) or (typing.Any, typing.Any)
            return {convert_value(name, k, key_kind, source=source):
                    convert_value(name, v, item_kind, source=source) for k, v in value.items()}
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}{name} = {value!r} is not a valid "
                          f"{getattr(base, '__name__', base)}") from exc
    return value


def option_flag(field: dataclasses.Field) -> str:
    """A field's command-line spelling: its ``flag``, else ``--field-name``."""
    return field.metadata.get("flag") or "--" + field.name.replace("_", "-")


def add_options(parser, cls, *, skip=(), only=None, flags=None, dest_prefix: str = "",
                default=dataclasses.MISSING, group_title: str | None = None) -> None:
    """Add an options class's command-line options to an argparse parser.

    Each option's dest is its field name and its default the field's default, so
    ``from_args(cls, parser.parse_args(...))`` gives back the same object.

    Args:
        parser: the parser (or argument group) to add to.
        cls: the options class.
        skip: field names left out.
        only: when given, the field names to add (in the class's order).
        flags: field name -> another spelling of its flag (``{"scenes": "--demo-scenes"}``).
        dest_prefix: put before each dest (``"training."``), for parsers that hold the
            options of several classes.
        default: every option's default instead of its field's (``argparse.SUPPRESS``: an
            option not given is left out of the parsed namespace).
        group_title: add the options as an argument group of this title.
    """
    target = parser.add_argument_group(group_title) if group_title else parser
    for field, kind in option_fields(cls):
        meta = field.metadata
        if field.name in skip or not meta.get("cli", True) or (
                only is not None and field.name not in only):
            continue
        names = [(flags or {}).get(field.name) or option_flag(field)]
        if meta.get("short"):
            names.insert(0, meta["short"])
        settings = dict(meta.get("argparse") or {})
        settings.setdefault("help", meta.get("help", ""))
        settings["dest"] = dest_prefix + settings.get("dest", field.name)
        settings.setdefault("default", _default(field) if default is dataclasses.MISSING
                            else default)
        if "action" not in settings:
            if _base_type(kind)[0] is bool:
                settings["action"] = "store_false" if _default(field) else "store_true"
            else:
                settings.setdefault("type", _cli_type(field.name, _one_value_kind(kind, settings)))
        action = settings.get("action")
        if action not in ("store_true", "store_false"):  # an option that takes a value
            for key in ("choices", "metavar"):
                if meta.get(key) is not None:
                    settings.setdefault(key, meta[key])
            if dest_prefix and action in (None, "append") and "choices" not in settings:
                # what argparse shows without the prefix: the flag's name
                settings.setdefault("metavar", names[-1].lstrip("-").replace("-", "_").upper())
        target.add_argument(*names, **settings)


def to_argv(options, *, skip=()) -> list[str]:
    """The command-line options that give ``options`` back: one for each field whose value
    differs from its default, in the class's order.

    ``from_args(cls, parser.parse_args(to_argv(options)))`` equals ``options`` for a parser
    made by :func:`add_options`; ``skyseg pipeline`` logs each step's command line this way.

    Args:
        options: an options object.
        skip: field names left out (the caller gives them another way).

    Raises:
        ValueError: a field that differs from its default has no command-line option.

    Example:
        >>> from dataclasses import dataclass
        >>> @dataclass
        ... class Tiles:
        ...     size: int = option(1088, "tile side in pixels")
        >>> to_argv(Tiles(size=512)), to_argv(Tiles())
        (['--size', '512'], [])
    """
    argv: list[str] = []
    for field, kind in option_fields(type(options)):
        value = getattr(options, field.name)
        if field.name in skip or value == _default(field):
            continue
        if not field.metadata.get("cli", True):
            raise ValueError(f"{type(options).__name__}.{field.name} = {value!r} has no "
                             "command-line option")
        argv += _arguments(option_flag(field), value, kind, field.metadata)
    return argv


def _arguments(flag: str, value, kind, meta) -> list[str]:
    """``[flag, text ...]`` for one option's value (see :func:`to_argv`)."""
    settings = dict(meta.get("argparse") or {})
    action = settings.pop("action", None)
    if action is argparse.BooleanOptionalAction and isinstance(value, bool):
        return [flag if value else "--no-" + flag[2:]]
    if action in ("store_true", "store_false") or (
            action is None and _base_type(kind)[0] is bool):
        return [flag]  # the value differs from the default: the flag flips it
    nargs = settings.get("nargs")
    if isinstance(action, type):  # an argparse.Action class: how many values it takes
        nargs = action([flag], "_", **settings).nargs
    if nargs == "?" and "const" in settings and value == settings["const"]:
        return [flag]
    items = [f"{k}={_text(v)}" for k, v in value.items()] if isinstance(value, dict) else value
    if not isinstance(items, (list, tuple)):
        return [flag, _text(items)]
    if nargs not in (None, "?"):
        return [flag, *(_text(item) for item in items)]
    if action is not None:  # append, or an action that adds one value per use
        return [part for item in items for part in (flag, _text(item))]
    return [flag, _text(items)]


def _text(value) -> str:
    """A value as the command line spells it: ``none``, ``0.002``, ``a,b``."""
    if value is None:
        return "none"
    if isinstance(value, float):
        short = format(value, "g")
        return short if float(short) == value else repr(value)
    if isinstance(value, (list, tuple)):
        return ",".join(_text(item) for item in value)
    return str(value)


def _one_value_kind(kind, settings: dict):
    """The type of one command-line value: a sequence's item type when the option takes
    several values or is repeated (``nargs``, ``append``), else the field's."""
    base, _ = _base_type(kind)
    several = settings.get("nargs") not in (None, "?") or settings.get("action") == "append"
    if several and typing.get_origin(base) in (list, tuple):
        return (typing.get_args(base) or (str,))[0]
    return kind


def _cli_type(name: str, kind):
    def parse(text):
        try:
            return convert_value(name, text, kind)
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from exc

    parse.__name__ = getattr(_base_type(kind)[0], "__name__", "value")
    return parse


def from_args(cls, args: argparse.Namespace, **overrides):
    """The options object a parsed command line describes (fields not on it: defaults)."""
    values = {field.name: _as_tuple(getattr(args, field.name), kind)
              for field, kind in option_fields(cls) if hasattr(args, field.name)}
    values.update(overrides)
    return cls(**values)


def _as_tuple(value, kind):
    """argparse's list of several values as a tuple field's tuple."""
    is_tuple = typing.get_origin(_base_type(kind)[0]) is tuple
    return tuple(value) if is_tuple and isinstance(value, list) else value


def from_mapping(cls, values, *, source: str, base: Path | None = None, start=None):
    """The options object a YAML section describes.

    Args:
        cls: the options class.
        values: the section (a mapping of field name -> value).
        source: names the file (and section) in error messages.
        base: relative paths are taken relative to this folder (the YAML file's).
        start: an options object to update instead of the defaults.

    Raises:
        ConfigError: not a mapping, an unknown key (the known ones are listed), a bad value.
    """
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: expected a mapping of settings, got "
                          f"{type(values).__name__}")
    known = {field.name: (field, kind) for field, kind in option_fields(cls)
             if field.metadata.get("yaml", True)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"{source}: unknown setting(s) {unknown}; known: "
                          f"{', '.join(sorted(known))}")
    changes = {}
    for key, value in values.items():
        field, kind = known[key]
        value = convert_value(key, value, kind, source=source)
        _check_choice(key, value, field.metadata.get("choices"), source)
        changes[key] = _relative_to(value, base)
    return dataclasses.replace(start if start is not None else cls(), **changes)


def _check_choice(name: str, value, choices, source: str) -> None:
    if choices is None or value is None:
        return
    for item in value if isinstance(value, (list, tuple)) else [value]:
        if item not in choices:
            raise ConfigError(f"{source}: {name} = {item!r}; choose one of "
                              f"{', '.join(map(str, choices))}")


def _relative_to(value, base: Path | None):
    if base is None:
        return value
    if isinstance(value, Path):
        return value if value.is_absolute() else base / value
    if isinstance(value, dict):
        return {k: _relative_to(v, base) for k, v in value.items()}
    return value


def to_mapping(options) -> dict:
    """An options object as plain values (paths as text), e.g. for ``config.json``."""
    def plain(value):
        if isinstance(value, Path):
            return str(value)
        if isinstance(value, dict):
            return {str(k): plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if dataclasses.is_dataclass(value):
            return to_mapping(value)
        return value

    return {field.name: plain(getattr(options, field.name))
            for field in dataclasses.fields(options)}
