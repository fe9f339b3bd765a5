"""Options shared by the command line and the YAML configuration.

Stage options are dataclasses whose fields carry a one-line help; the command line's
options and the pipeline's YAML settings are made from them, so each default is written
once. This module holds what every layer may use: turning text into values.
"""

from __future__ import annotations

from skyseg.errors import ConfigError

__all__ = ["parse_bool"]


_TRUE = {"1", "true", "yes", "on", "y", "t"}


_FALSE = {"0", "false", "no", "off", "n", "f"}


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
