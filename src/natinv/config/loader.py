"""Load params files (a default plus profile overlays), merge them in order and convert the result into the schema's
dataclasses. Every error names the file and key that set the bad value, the value, and what is allowed, in one line."""
from __future__ import annotations

import copy
import dataclasses
import math
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from natinv.config.checks import check_references
from natinv.config.schema import Config, MethodConfig
from natinv.errors import ConfigError


def _merge(base: dict, over: dict, origin: dict, source: str, prefix: str = "") -> None:
    """Deep-merge `over` into `base`, recording in `origin` which file set each key."""
    for key, value in over.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            origin.setdefault(path, source)
            _merge(base[key], value, origin, source, path + ".")
        else:
            base[key] = value
            for k in [k for k in origin if k.startswith(path + ".")]:
                del origin[k]
            origin[path] = source


def read_params_file(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a text file (byte {exc.start} is not UTF-8); expected a YAML params file") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise ConfigError(f"{path}{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at the top level, got {type(data).__name__}")
    return data


def load_config(paths: list[str | Path], overrides: list[dict[str, Any]] = ()) -> Config:
    """Load and validate params files in order (later files override earlier ones), then `overrides`."""
    if not paths:
        raise ConfigError("no params file given: pass --params params/default.yaml")
    merged: dict = {}
    origin: dict[str, str] = {}
    for p in paths:
        _merge(merged, read_params_file(Path(p)), origin, str(p))
    for over in overrides:
        _merge(merged, over, origin, "command line")
    return config_from_dict(merged, origin)


def file_origins(paths: list[str | Path], final: dict | None = None, elsewhere: str = "") -> dict[str, str]:
    """Which of `paths` (merged in order) set each key: for a config merged elsewhere (Snakemake's `config`), so its
    errors still name the one file that set the bad value. Keys whose value in `final` is not the files' were set
    `elsewhere` (e.g. 'snakemake --config')."""
    merged: dict = {}
    origin: dict[str, str] = {}
    for p in paths:
        _merge(merged, read_params_file(Path(p)), origin, str(p))

    def differing(tree: dict, files: Any, prefix: str) -> None:
        for key, value in tree.items():
            path, theirs = f"{prefix}{key}", files.get(key) if isinstance(files, dict) else None
            if isinstance(value, dict) and isinstance(theirs, dict):
                differing(value, theirs, path + ".")
            elif value != theirs or (isinstance(files, dict) and key not in files):
                origin[path] = elsewhere

    if final is not None:
        differing(final, merged, "")
    return origin


def retype_lists(tree: dict, origin: dict[str, str], elsewhere: str, prefix: str = "") -> dict:
    """`tree` with the items of every list set `elsewhere` read as YAML scalars: Snakemake's --config reads
    `seeds=[0,1,2]` as a list of the strings '0', '1', '2' (YAML's base loader)."""
    out = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            value = retype_lists(value, origin, elsewhere, path + ".")
        elif isinstance(value, list) and origin.get(path) == elsewhere:
            value = [yaml.safe_load(v) if isinstance(v, str) else v for v in value]
        out[key] = value
    return out


def method_bases(methods: Any, name: str) -> list[str]:
    """The methods `name` derives from, nearest first (`base: ni` in synthesis.methods; raw params, not checked)."""
    chain: list[str] = []
    while isinstance(methods, dict) and isinstance(spec := methods.get(name), dict) and isinstance(spec.get("base"), str):
        name = spec["base"]
        if name in chain:
            break
        chain.append(name)
    return chain


def derive_methods(raw: dict, fail: Any) -> dict:
    """`raw` with each method of synthesis.methods that names a `base` replaced by that method's settings (derived the
    same way) updated with its own: a variant states only how it differs, and follows every change of its base."""
    methods = raw.get("synthesis", {}).get("methods") if isinstance(raw.get("synthesis"), dict) else None
    if not isinstance(methods, dict) or not any(isinstance(m, dict) and "base" in m for m in methods.values()):
        return raw
    derived: dict[str, Any] = {}

    def derive(name: str, seen: tuple[str, ...]) -> Any:
        spec = methods[name]
        if name in derived or not isinstance(spec, dict) or "base" not in spec:
            return derived.get(name, spec)
        base, where = spec["base"], f"synthesis.methods.{name}.base"
        others = [k for k in methods if k != name]
        if not isinstance(base, str) or base not in others:
            fail(where, f"got {base!r}; expected the name of another method of synthesis.methods: {', '.join(others) or '(none)'}")
        if base in seen:
            fail(where, f"got {base!r}; methods cannot derive from each other in a circle ({' -> '.join([*seen, name, base])})")
        tree = copy.deepcopy(derive(base, (*seen, name)))
        if not isinstance(tree, dict):
            return spec  # the base's own error is reported where it is converted
        _merge(tree, {k: v for k, v in spec.items() if k != "base"}, {}, "")
        derived[name] = tree
        return tree

    out = {**raw, "synthesis": {**raw["synthesis"], "methods": {k: derive(k, ()) for k in methods}}}
    return out


def config_from_dict(raw: dict, origin: dict[str, str] | None = None) -> Config:
    conv = _Converter(origin or {})
    cfg = conv.build(Config, derive_methods(raw, conv.fail), "")
    check_references(cfg, conv.fail)
    return cfg


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if tp is bool:
        return "true or false"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is str:
        return "a string"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        text = " or ".join(_describe(a) for a in args)
        return text + (" or null" if len(args) < len(typing.get_args(tp)) else "")
    if origin is list:
        item = _describe(typing.get_args(tp)[0])
        return "a list of " + {"an integer": "integers", "a number": "numbers", "a string": "strings"}.get(item, f"items: {item}")
    if origin is dict:
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return str(tp)


class _Converter:
    def __init__(self, origin: dict[str, str]):
        self.origin = origin

    def where(self, path: str) -> str:
        key = re.sub(r"\[\d+\]$", "", path)  # a list item was set with its list
        while key and key not in self.origin:
            key = key.rpartition(".")[0]
        return self.origin.get(key, "params")

    def fail(self, path: str, message: str) -> None:
        raise ConfigError(f"{self.where(path)}: {path}: {message}")

    def bad(self, path: str, value: Any, tp: Any) -> None:
        self.fail(path, f"got {value!r} ({type(value).__name__}); expected {_describe(tp)}")

    def build(self, cls: type, raw: Any, path: str) -> Any:
        if not isinstance(raw, dict):
            self.bad(path or "(top level)", raw, cls)
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = [k for k in raw if k not in fields]
        if unknown:
            key = f"{path}.{unknown[0]}" if path else str(unknown[0])
            self.fail(key, f"unknown key; allowed keys here: {', '.join(fields)}")
        kwargs = {}
        for name, f in fields.items():
            key = f"{path}.{name}" if path else name
            if name in raw:
                value = self.convert(hints[name], raw[name], key)
                self.check_min(f, value, key)
                kwargs[name] = value
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                self.fail(key, "missing required key")
        return cls(**kwargs)

    def check_min(self, f: dataclasses.Field, value: Any, key: str) -> None:
        if "min" not in f.metadata or value is None:
            return
        lo, exclusive, below = f.metadata["min"], f.metadata["exclusive"], f.metadata.get("below")
        if value < lo or (exclusive and value == lo):
            self.fail(key, f"got {value!r}; must be {'>' if exclusive else '>='} {lo}" + (f" and < {below}" if below is not None else ""))
        if below is not None and value >= below:
            self.fail(key, f"got {value!r}; must be < {below}" + f" and {'>' if exclusive else '>='} {lo}")

    def convert(self, tp: Any, value: Any, path: str) -> Any:
        origin = typing.get_origin(tp)
        if tp is MethodConfig:
            return self.method(value, path)
        if origin in (Union, types.UnionType):
            args = typing.get_args(tp)
            if value is None and type(None) in args:
                return None
            for arg in (a for a in args if a is not type(None)):
                try:
                    return self.convert(arg, value, path)
                except ConfigError:
                    continue
            self.bad(path, value, tp)
        if origin is Literal:
            if value not in typing.get_args(tp):
                self.bad(path, value, tp)
            return value
        if origin is list:
            if not isinstance(value, list):
                self.bad(path, value, tp)
            (item,) = typing.get_args(tp)
            return [self.convert(item, v, f"{path}[{i}]") for i, v in enumerate(value)]
        if origin is dict:
            if not isinstance(value, dict):
                self.bad(path, value, tp)
            _, item = typing.get_args(tp)
            return {str(k): self.convert(item, v, f"{path}.{k}") for k, v in value.items()}
        if dataclasses.is_dataclass(tp):
            return self.build(tp, value, path)
        if tp is bool:
            if not isinstance(value, bool):
                self.bad(path, value, tp)
            return value
        if tp is int:
            if isinstance(value, bool) or not isinstance(value, int):
                self.bad(path, value, tp)
            return value
        if tp is float:
            # YAML reads 1e-3 (no dot) as a string; accept numeric strings of that form only
            if isinstance(value, str):
                try:
                    value = float(value)
                except ValueError:
                    self.bad(path, value, tp)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                self.bad(path, value, tp)
            if not math.isfinite(value):
                self.fail(path, f"got {value!r}; expected a finite number")
            return float(value)
        if tp is str:
            if not isinstance(value, str):
                self.bad(path, value, tp)
            return value
        raise TypeError(f"unsupported config type {tp}")  # a bug in the schema, not user input

    def method(self, value: Any, path: str) -> MethodConfig:
        if not isinstance(value, dict):
            self.bad(path, value, dict)
        from natinv.synthesis.registry import METHODS

        kind = value.get("kind")
        if kind not in METHODS:
            self.fail(f"{path}.kind", f"got {kind!r}; expected one of {', '.join(map(repr, METHODS))}")
        return self.build(METHODS[kind].config, value, path)



def resolved_text(cfg: Config) -> bytes:
    """Every parameter, defaults included, as the YAML that load_config reads again."""
    return yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False).encode()


def write_resolved(cfg: Config, path: Path) -> None:
    """resolved_text(cfg) to `path`; the file is left alone when unchanged."""
    from natinv.io import atomic_write_bytes

    text = resolved_text(cfg)
    if not path.is_file() or path.read_bytes() != text:
        atomic_write_bytes(path, text)
