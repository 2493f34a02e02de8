"""rs3l-coffea: RS3L jet representations for coffea analyses.

Each stage of the data flow lives in its own subpackage (``generation``, ``detector``,
``io``, ``features``, ``augment``, ``nn``, ``training``, ``inference``, ``coffea_processing``,
``evaluation``, ``study``, ``cli``) and imports alone; docs/architecture.md maps what each
owns and what may import what. Heavy objects are exposed lazily so that
``import rs3l_coffea`` stays cheap and never imports torch or coffea by itself.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "RS3LTagger": ("rs3l_coffea.inference.tagger", "RS3LTagger"),
    "FEATURE_NAMES": ("rs3l_coffea.features", "FEATURE_NAMES"),
    "build_features": ("rs3l_coffea.features", "build_features"),
    "load_jets": ("rs3l_coffea.io", "load_jets"),
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    try:
        module_name, attribute = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'rs3l_coffea' has no attribute {name!r}") from None
    return getattr(import_module(module_name), attribute)
