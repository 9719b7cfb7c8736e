"""Name -> builder registries for blocks, encoders and decoders.

MONAI's ``ComponentStore`` only accepts Python identifiers as names, which rules out the names users already know
(``"efficientnet-b0"``, ``"mobilenetv2-2d-top"``), so we keep a small registry of our own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any


class Registry:
    """A named mapping from string keys to builders (classes or functions)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, Callable[..., Any]] = {}
        self._aliases: dict[str, str] = {}

    def register(self, name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator registering ``builder`` under ``name``; a name can be registered only once."""

        def deco(builder: Callable[..., Any]) -> Callable[..., Any]:
            self.add(name, builder)
            return builder

        return deco

    def add(self, name: str, builder: Callable[..., Any]) -> None:
        if name in self._aliases:
            raise KeyError(f"{self.kind} {name!r} is already an alias of {self._aliases[name]!r}")
        if name in self._items and self._items[name] is not builder:
            raise KeyError(f"{self.kind} {name!r} is already registered to {self._items[name]!r}")
        self._items[name] = builder

    def alias(self, old_name: str, name: str) -> None:
        """Accept ``old_name`` for the registered ``name`` (an old spelling that existing configs still use). Aliases
        resolve in :meth:`get` and ``in``, but are not listed by :meth:`names`."""
        if name not in self._items:
            raise KeyError(f"cannot alias {old_name!r} to the unregistered {self.kind} {name!r}")
        if old_name in self._items or self._aliases.get(old_name, name) != name:
            raise KeyError(f"{self.kind} {old_name!r} is already registered")
        self._aliases[old_name] = name

    def get(self, name: str) -> Callable[..., Any]:
        try:
            return self._items[self._aliases.get(name, name)]
        except KeyError:
            raise KeyError(f"unknown {self.kind} {name!r}; registered: {', '.join(sorted(self._items))}") from None

    def __getitem__(self, name: str) -> Callable[..., Any]:
        return self.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._items or name in self._aliases

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def names(self) -> list[str]:
        return sorted(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"
