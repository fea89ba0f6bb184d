"""Package namespaces that import their members on first use.

A package's ``__init__`` re-exports its public API, but importing it must stay cheap:
``tokensieve --help`` and a mistyped option should answer in well under a second, and
torch alone takes seconds to import. `lazy_exports` gives a package a module-level
``__getattr__`` (PEP 562) that imports a member's module when the member is first used.
"""

from __future__ import annotations

import importlib
import sys


def lazy_exports(package: str, members: dict[str, list[str]]):
    """``(__getattr__, __dir__)`` for `package`, given ``{module: [names]}``."""
    where = {name: module for module, names in members.items() for name in names}

    def __getattr__(name: str):
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(where[name]), name)
        setattr(sys.modules[package], name, value)  # later lookups skip this function
        return value

    def __dir__() -> list[str]:
        return sorted(set(where) | set(vars(sys.modules[package])))

    return __getattr__, __dir__
