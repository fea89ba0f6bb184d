"""One registry idiom: the names a user types, each mapped to what it builds.

Entries are written as ``"module:attribute"`` strings and imported on first use, so
listing the names (argparse choices, ``--help``, error messages) imports nothing heavy:
the CLI answers before torch is loaded. The CLI name is the key everywhere, benchmarks
included; ``build(name, **options)`` refuses options the class does not take.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Iterator, Mapping
from typing import Any

from tokensieve.errors import UserError


class Registry(Mapping[str, Any]):
    """``{name: class}``, read-only, loaded lazily; `kind` names the family in errors."""

    def __init__(self, kind: str, entries: dict[str, str]):
        self.kind = kind
        self._entries: dict[str, Any] = dict(entries)
        self._loaded: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Any:
        if name not in self._entries:
            raise KeyError(name)
        if name not in self._loaded:
            target = self._entries[name]
            if isinstance(target, str):  # "module:attribute.attribute"
                module, _, path = target.partition(":")
                target = importlib.import_module(module)
                for attribute in path.split("."):
                    target = getattr(target, attribute)
            self._loaded[name] = target
        return self._loaded[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, name: str, target: Any) -> None:
        """Register `target` as `name`: a ``"module:attribute"`` string (imported on first
        use; how one capability plugs into another's extension point, see
        `tokensieve.extensions`) or the object itself (a user's own task, say)."""
        self._entries[name] = target
        self._loaded.pop(name, None)

    def remove(self, name: str) -> None:
        """Forget `name` (a test's temporary entry, say)."""
        self._entries.pop(name, None)
        self._loaded.pop(name, None)

    def load(self, name: str) -> Any:
        """The class registered as `name`, or a `UserError` listing the choices."""
        if name not in self._entries:
            raise UserError(f"unknown {self.kind} {name!r}; choose one of {', '.join(self)}")
        return self[name]

    def build(self, name: str, **options) -> Any:
        """An instance of `name` with `options`; an option it does not take is an error."""
        cls = self.load(name)
        parameters = inspect.signature(cls).parameters
        takes_any = any(p.kind is p.VAR_KEYWORD for p in parameters.values())
        unknown = sorted(set(options) - set(parameters))
        if unknown and not takes_any:
            accepted = ", ".join(parameters) or "none"
            raise UserError(f"{self.kind} {name!r} takes no option {', '.join(unknown)} "
                            f"(it takes: {accepted})")  # fmt: skip
        return cls(**options)
