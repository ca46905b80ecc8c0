"""Named components: priors, likelihoods, network architectures and model kinds.

Each module that defines a component registers it here under the name a configuration uses
(``@PRIORS.register("vamp", "...")``); building one is ``PRIORS.build(name, ...)``, and
config validation and ``--help`` read the names from the registries. Adding a prior is one
class and one decorator, not an edit of every ``if name == ...`` chain.
"""

from __future__ import annotations

from typing import Any, Callable


class Registry:
    """name -> (builder, one-line description), in registration order."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, tuple[Callable[..., Any], str]] = {}

    def register(self, name: str, description: str = ""):
        def add(builder):
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = (builder, description)
            return builder
        return add

    def names(self) -> tuple[str, ...]:
        _load()
        return tuple(self._items)

    def get(self, name: str) -> Callable[..., Any]:
        _load()
        if name not in self._items:
            raise ValueError(f"unknown {self.kind} {name!r}; choose {', '.join(self._items)}")
        return self._items[name][0]

    def build(self, name: str, *args, **kwargs):
        return self.get(name)(*args, **kwargs)

    def describe(self) -> str:
        """'name (description), ...' for help texts."""
        _load()
        return "; ".join(f"{n}: {d}" if d else n for n, (_, d) in self._items.items())


PRIORS = Registry("prior")
LIKELIHOODS = Registry("likelihood")
ARCHITECTURES = Registry("architecture")
MODEL_KINDS = Registry("model kind")


def _load() -> None:
    """Import the modules that register components (they import torch: done on first use)."""
    import importlib

    for module in ("distributions", "networks", "model", "hierarchy", "conditional"):
        importlib.import_module(f"{__package__}.{module}")
