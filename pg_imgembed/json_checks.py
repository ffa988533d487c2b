"""Checks of the values read from a model's JSON config (the image tower's and the text tower's).

Each returns the value, normalised, or raises ``InvalidConfig`` naming the key as the config
spells it, so a user sees which key to fix.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .errors import InvalidConfig


def check_keys(where: str, raw: Mapping[str, Any], known: set[str], also_accepted: frozenset[str] = frozenset()) -> None:
    """``also_accepted``: keys expanded before this check (``template``), named in the hint too."""
    unknown = sorted(set(raw) - known)
    if unknown:
        raise InvalidConfig(
            f"unknown {where} key {unknown[0]!r}",
            hint=f"Known {where} keys: {', '.join(sorted(known | also_accepted))}.",
        )


def json_object(what: str, value: Any) -> Mapping[str, Any]:
    # Without this, a list/number here fails with TypeError (or an odd "unknown key") instead.
    if not isinstance(value, Mapping):
        raise InvalidConfig(f"{what} must be a JSON object, not {value!r}")
    return value


def choice(what: str, value: Any, allowed: Any) -> str:
    # isinstance first: an unhashable value (a list) would raise TypeError on ``in`` a dict.
    if not isinstance(value, str) or value not in allowed:
        raise InvalidConfig(f"{what} must be one of {', '.join(map(str, allowed))}; got {value!r}")
    return str(value)


def positive_int(what: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise InvalidConfig(f"{what} must be a positive integer, not {value!r}")
    return value


def positive_float(what: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise InvalidConfig(f"{what} must be a positive number, not {value!r}")
    return float(value)


def triple(what: str, value: Any, kind: type) -> Any:
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = [value] * 3
    if not isinstance(value, (list, tuple)) or len(value) != 3 or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
    ):
        raise InvalidConfig(f"{what} must be a list of 3 numbers (one per channel), not {value!r}")
    return tuple(kind(v) for v in value)


def colour(what: str, value: Any) -> tuple[int, int, int] | None:
    # 0-255 integers only: int() would silently truncate 0.5 and PIL would clip 300 to 255.
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value] * 3  # one grey level, as triple accepts for mean/std
    if not isinstance(value, (list, tuple)) or len(value) != 3 or not all(
        isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in value
    ):
        raise InvalidConfig(f"{what} must be a list of 3 integers 0-255 (R, G, B), not {value!r}")
    return (value[0], value[1], value[2])


def nonzero(what: str, std: tuple[float, ...] | None) -> tuple[float, ...] | None:
    # ``what`` names the key as spelt in the config (preprocess.std or <Processor>.image_std).
    if std is not None and any(v == 0 for v in std):
        raise InvalidConfig(f"{what} must not contain 0, got {list(std)}")
    return std
