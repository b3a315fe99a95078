"""What a params value may make natinv import: only a module installed in the environment, never one found in the
working directory, under results/ or in any folder a params value or data file names. A `module:Class` setting
(`metrics.inception.feature_extractor`) is checked before anything of it is imported: where its top-level package
lives is looked up without running it, and it must lie in the interpreter's installed locations (site-packages, the
standard library) or be natinv itself.
"""
from __future__ import annotations

import importlib
import importlib.util
import site
import sys
import sysconfig
from pathlib import Path

from natinv.errors import ConfigError


def installed_roots() -> list[Path]:
    """The folders an installed module may live in: the environment's site-packages, the standard library, natinv's
    own package folder (an editable install's source)."""
    paths = sysconfig.get_paths()
    roots = [paths[k] for k in ("purelib", "platlib", "stdlib", "platstdlib") if k in paths]
    roots += [*site.getsitepackages(), site.getusersitepackages()]
    roots.append(str(Path(__file__).resolve().parent))
    return [Path(r).resolve() for r in roots if r]


def _inside(path: Path, roots: list[Path]) -> bool:
    path = path.resolve()
    return any(path == root or root in path.parents for root in roots)


def installed_attribute(key: str, spec: str):
    """The attribute `Class` of the installed module `module` that `spec` = 'module:Class' names (a params value at
    `key`), imported; a module that is not installed (found in the working directory, under results/, anywhere else)
    is refused with one line, before any of its code runs."""
    module, attr = check_installed(key, spec)
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"{key} = {spec!r}: {exc}") from None


def check_installed(key: str, spec: str) -> tuple[str, str]:
    """(module, attribute) of `spec` = 'module:Class' once its module is known to be installed, without importing it;
    else one line (ConfigError naming `key`)."""
    module, sep, attr = spec.partition(":")
    if not sep or not module or not attr or not all(part.isidentifier() for part in [*module.split("."), attr]):
        raise ConfigError(f"{key} = {spec!r}: expected 'module:Class' with an installed module's dotted name")
    top = module.split(".")[0]
    if top not in sys.modules or top == "__main__":
        found = importlib.util.find_spec(top)  # a top-level name: found without running anything
        if found is None:
            raise ConfigError(f"{key} = {spec!r}: no installed module {top!r}")
        places = ([Path(found.origin)] if found.origin not in (None, "built-in", "frozen") else []) + \
            [Path(p) for p in (found.submodule_search_locations or [])]
    else:
        loaded = sys.modules[top]
        places = [Path(p) for p in ([getattr(loaded, "__file__", None)] + list(getattr(loaded, "__path__", []))) if p]
    roots = installed_roots()
    outside = [p for p in places if not _inside(p, roots)]
    if outside:
        raise ConfigError(f"{key} = {spec!r}: module {top!r} is not installed (it would be imported from {outside[0]}); "
                          f"natinv imports only modules installed in its environment (pip install yours)")
    return module, attr
