"""Typed run configs: dataclasses filled from defaults, a TOML/YAML/JSON file, then CLI flags.

Every dataclass field becomes a ``--kebab-case`` flag, so ``--help`` lists every knob with its
default and the file format needs no separate schema. Later layers win:
defaults < ``--config FILE`` < command-line flags.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def load_file(path: str | Path) -> dict[str, Any]:
    """Read a config file (.toml, .yaml/.yml or .json) into a dict."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"config file not found: {path}")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".toml":
            data = tomllib.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        elif path.suffix == ".json":
            data = json.loads(text)
        else:
            raise ValueError(f"{path}: unknown config format (use .toml, .yaml or .json)")
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: {e}") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path}: top level must be a table/mapping")
    return data


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    """(inner type, is_optional) for ``X | None``."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check/convert one value from a file or flag to the field's declared type."""
    inner, optional = _unwrap_optional(tp)
    if value is None:
        if optional:
            return None
        raise ValueError(f"{where}: may not be empty")
    if dataclasses.is_dataclass(inner):
        if isinstance(value, inner):
            return value
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected a table, got {type(value).__name__}")
        return from_dict(inner, value, where)
    origin = typing.get_origin(inner)
    if origin in (list, tuple):
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where}: expected a list, got {value!r}")
        (item,) = typing.get_args(inner)[:1] or (str,)
        out = [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if inner is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            return value.lower() in ("1", "true", "yes", "on")
        raise ValueError(f"{where}: expected true/false, got {value!r}")
    if inner in (int, float):
        if isinstance(value, bool):
            raise ValueError(f"{where}: expected a number, got {value!r}")
        try:
            number = float(value) if inner is float else int(str(value).replace("_", ""))
        except ValueError:
            raise ValueError(f"{where}: expected {inner.__name__}, got {value!r}") from None
        return number
    if inner is str:
        return str(value)
    return value


def from_dict(cls: type[T], data: dict[str, Any], where: str = "config") -> T:
    """Build dataclass ``cls`` from a (possibly nested) dict, naming any unknown key."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in data.items()}
    return cls(**kwargs)  # type: ignore[call-arg]


def to_dict(obj: Any) -> dict[str, Any]:
    return dataclasses.asdict(obj)


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict merge; ``override`` wins."""
    out = dict(base)
    for k, v in override.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def add_arguments(parser: argparse.ArgumentParser, cls: type, skip: tuple[str, ...] = ()) -> None:
    """One ``--flag`` per scalar/list field of ``cls``; help text comes from field metadata. Fields marked
    ``metadata={"derived": True}`` are computed from others and get no flag."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip or f.metadata.get("derived") or dataclasses.is_dataclass(_unwrap_optional(hints[f.name])[0]):
            continue
        tp, _ = _unwrap_optional(hints[f.name])
        default = f.default if f.default is not dataclasses.MISSING else None
        if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = f.default_factory()  # type: ignore[misc]
        help_text = f.metadata.get("help", "")
        if isinstance(default, (list, tuple)):  # shown the way it is typed: --lora-targets q_proj,k_proj
            default = ",".join(map(str, default))
        elif default is None:
            default = "unset"
        shown = f" (default: {default})" if default != "" else ""
        flag = "--" + f.name.replace("_", "-")
        if tp is bool:
            parser.add_argument(
                flag,
                dest=f.name,
                action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS,
                help=f"{help_text}{shown}",
            )
        else:
            parser.add_argument(
                flag,
                dest=f.name,
                default=argparse.SUPPRESS,
                metavar=f.name.upper(),
                help=f"{help_text}{shown}",
            )


def resolve(cls: type[T], args: argparse.Namespace, section: str | None = None) -> T:
    """defaults < ``args.config`` file (optionally its ``[section]``) < flags given on the CLI."""
    layers: dict[str, Any] = {}
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    config_path = getattr(args, "config", None)
    if config_path:
        data = load_file(config_path)
        if section and isinstance(data.get(section), dict):
            # One file may configure several stages: keep the shared top level (scalars and this
            # config's own tables such as [model]), drop other stages' tables, then apply [section].
            shared = {k: v for k, v in data.items() if not isinstance(v, dict) or k in names}
            data = merge(shared, data[section])
        layers = merge(layers, data)
    flags = {k: v for k, v in vars(args).items() if k in names and k != "config"}
    layers = merge(layers, flags)
    return from_dict(cls, layers, where=str(config_path or "flags"))


def save_resolved(cfg: Any, path: str | Path) -> None:
    """Write the fully resolved config next to a run's outputs (reproducibility)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(to_dict(cfg), indent=2, ensure_ascii=False, default=str) + "\n")
