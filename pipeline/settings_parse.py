"""Turning nested TOML-shaped data into typed dataclasses, with errors that name the setting.

Generic: knows nothing of CertPortal's sections; ``pipeline.settings`` describes them.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError

T = typing.TypeVar("T")


def set_path(raw: dict[str, Any], parts: list[str], value: Any) -> None:
    node = raw
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"environment override for {'.'.join(parts)} conflicts with a value")
    node[parts[-1]] = value


def parse_env_value(value: str) -> Any:
    try:
        return tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        return value


def build(cls: type[T], raw: Mapping[str, Any], where: tuple[str, ...]) -> T:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"[{'.'.join(where)}] must be a table")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = set(raw) - set(fields) - {"secrets"}
    if unknown or "secrets" in raw:
        name = ".".join((*where, sorted(unknown | ({"secrets"} & set(raw)))[0]))
        raise ConfigError(f"unknown setting {name}")
    kwargs: dict[str, Any] = {}
    for name, value in raw.items():
        kwargs[name] = coerce(hints[name], value, (*where, name))
    return cls(**kwargs)


def coerce(hint: Any, value: Any, where: tuple[str, ...]) -> Any:
    name = ".".join(where)
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return build(hint, value, where)  # type: ignore[arg-type, type-var]
    if origin in (types.UnionType, typing.Union):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return None if value is None else coerce(args[0], value, where)
    if hint is Path:
        return Path(str(value))
    if origin is list:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise ConfigError(f"{name} must be a list")
        (item,) = typing.get_args(hint)
        return [coerce(item, v, where) for v in value]
    if hint is bool:
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            try:
                return int(str(value))
            except ValueError:
                raise ConfigError(f"{name} must be a whole number") from None
        return value
    if hint is float:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{name} must be a number") from None
    if hint is str:
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise ConfigError(f"{name} must be a string")
        return str(value)
    return value
