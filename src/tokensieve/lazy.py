"""Package namespaces that import their members on first use.

A package's ``__init__`` re-exports its public API, but importing it must stay cheap:
``tokensieve --help`` and a mistyped option should answer in well under a second, and
torch alone takes seconds to import. `lazy_exports` gives a package a module-level
``__getattr__`` (PEP 562) that imports a member's module when the member is first used.

One subtlety: when a member shares its name with a submodule (``vocab.transplant`` the
function in ``vocab/transplant.py``), importing the submodule makes Python set the
package attribute to the module. An eager ``from .transplant import transplant`` would
overwrite it with the function; here the package refuses that assignment instead, so
the member wins either way, as users of the eager version expect.
"""

from __future__ import annotations

import importlib
import sys
import types


class _LazyPackage(types.ModuleType):
    def __setattr__(self, name: str, value) -> None:
        if isinstance(value, types.ModuleType) and name in self.__dict__.get("_lazy", ()):
            return  # the submodule of the same name stays reachable through sys.modules
        super().__setattr__(name, value)


def lazy_exports(package: str, members: dict[str, list[str]]):
    """``(__getattr__, __dir__)`` for `package`, given ``{module: [names]}``."""
    where = {name: module for module, names in members.items() for name in names}
    module = sys.modules[package]
    module._lazy = where
    module.__class__ = _LazyPackage

    def __getattr__(name: str):
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(where[name]), name)
        object.__setattr__(module, name, value)  # later lookups skip this function
        return value

    def __dir__() -> list[str]:
        return sorted(set(where) | set(vars(module)))

    return __getattr__, __dir__
