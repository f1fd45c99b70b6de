"""Registry of FeatureModules by name, so that a config (data) can name the modules it uses.

A module class registers itself with ``@register_module`` in its own file under
``liverank/models/modules/``; every file of that package is imported on first use, so adding a
module is adding a file, and deleting one touches nothing else.

Module classes are built as ``cls(feature_map, emb, **params)``; :func:`build_module` checks the
params against the constructor's signature first, so a typo in a YAML file gives an error that
names the module and the parameters it accepts.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from typing import Any, TypeVar

from liverank.errors import ConfigError
from liverank.features.spec import FeatureMap
from liverank.models.base import FeatureModule
from liverank.models.layers.embedding import EmbeddingCollection

_REGISTRY: dict[str, type[FeatureModule]] = {}
_discovered = False
M = TypeVar("M", bound=type[FeatureModule])


def register_module(cls: M) -> M:
    """Class decorator: make ``cls`` available under ``cls.name``."""
    existing = _REGISTRY.get(cls.name)
    if existing is not None and existing is not cls:
        raise ConfigError(f"two FeatureModules named '{cls.name}': {existing} and {cls}")
    _REGISTRY[cls.name] = cls
    return cls


def _discover() -> None:
    global _discovered
    if _discovered:
        return
    import liverank.models.modules as package

    for info in pkgutil.iter_modules(package.__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{package.__name__}.{info.name}")
    _discovered = True


def list_modules() -> list[str]:
    """Names of every registered FeatureModule."""
    _discover()
    return sorted(_REGISTRY)


def get_module_class(name: str) -> type[FeatureModule]:
    _discover()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(
            f"unknown feature module '{name}'; known modules: {', '.join(sorted(_REGISTRY))}"
        ) from None


def build_module(
    name: str, feature_map: FeatureMap, emb: EmbeddingCollection, params: dict[str, Any]
) -> FeatureModule:
    """Instantiate module ``name`` with ``params``, checking the parameter names first."""
    cls = get_module_class(name)
    sig = inspect.signature(cls.__init__)
    accepted = [p for p in sig.parameters if p not in ("self", "feature_map", "emb")]
    takes_any = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
    unknown = [k for k in params if k not in accepted]
    if unknown and not takes_any:
        raise ConfigError(
            f"module '{name}' has no parameter(s) {unknown}; it accepts: {', '.join(accepted)}"
        )
    return cls(feature_map, emb, **params)
