"""Lazy package exports (PEP 562): `from owl2 import Owl2Model` imports what it names, and nothing else.

torch, transformers and timm take seconds to import. A package `__init__` that imported its modules
eagerly would make `import owl2`, `owl2 --help` and every command's error message pay for all of
them. Each package instead lists its public names with the module that defines each; a name's
module is imported the first time the name is looked up, and the value is then cached on the package.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, exports: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The `__getattr__` and `__dir__` of a package whose public names are imported on first use.

    Args:
        package: The package's `__name__`.
        exports: Public name -> the module that defines it (absolute, e.g. "owl2.models.owl2").

    Returns:
        `(__getattr__, __dir__)`, to be assigned at the package's top level.
    """

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(exports[name]), name)
        setattr(importlib.import_module(package), name, value)  # later look-ups skip this function
        return value

    def __dir__() -> list[str]:
        return sorted({*exports, *vars(importlib.import_module(package))})

    return __getattr__, __dir__
