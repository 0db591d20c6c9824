"""Checks shared by the options of backends and rerankers: is a value a number of the kind
an option counts in, or a mapping of names that leaves rankwise's own alone?"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from rankwise.errors import InputError


def is_real(value: object) -> bool:
    """An int or float that is not a bool and not NaN."""
    return isinstance(value, int | float) and not isinstance(value, bool) and not math.isnan(value)


def is_finite(value: object) -> bool:
    """An int or float that is not a bool, NaN or infinite."""
    return is_real(value) and math.isfinite(value)  # type: ignore[arg-type]


def check_whole(name: str, value: object, least: int, meaning: str = "") -> None:
    """Raise :class:`InputError` unless ``value`` is a whole number of at least ``least``;
    ``meaning`` says what ``least`` means (say, " (off)")."""
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise InputError(
            f"{name} must be a whole number of at least {least}{meaning}, got {value!r}"
        )


def check_real(name: str, value: object, least: float, meaning: str = "") -> None:
    """Raise :class:`InputError` unless ``value`` is a number (not NaN) of at least
    ``least``."""
    if not is_real(value) or value < least:  # type: ignore[operator]
        raise InputError(f"{name} must be a number of at least {least}{meaning}, got {value!r}")


def check_flag(
    name: str, value: object, *, unset_allowed: bool = False, spelling: str = ""
) -> None:
    """Raise :class:`InputError` unless ``value`` is True or False (or, with
    ``unset_allowed``, None): a string such as "false" from a config file would be true.
    ``spelling`` adds how to write the two values where they are typed (`` (on the command
    line: ...)``)."""
    if isinstance(value, bool) or (unset_allowed and value is None):
        return
    unset = ", or None for the default" if unset_allowed else ""
    raise InputError(f"{name} must be True or False{unset}{spelling}, got {value!r}")


def checked_names(
    name: str, value: object, reserved: frozenset[str], *, names: str, example: str, taken: str
) -> dict[str, Any]:
    """``value`` as a dict; :class:`InputError` unless it maps ``names`` (strings) to values,
    none of them in ``reserved`` (what rankwise sets itself: ``taken`` says so and what to
    do instead)."""
    if not isinstance(value, Mapping) or not all(isinstance(key, str) for key in value):
        raise InputError(
            f"{name} must map {names} to values, such as {example}; got {value!r:.100}"
        )
    clashes = sorted(reserved.intersection(value))
    if clashes:
        raise InputError(f"{name} sets {', '.join(clashes)}, {taken}")
    return dict(value)
