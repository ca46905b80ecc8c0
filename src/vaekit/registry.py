"""Named components: priors, likelihoods, network architectures and model kinds.

Every name a configuration can use is declared here once, with a one-line description and
where its builder lives (``"module:function"``, imported on first use, so that ``vaekit
--help`` and config validation read the names without loading torch). Building one is
``PRIORS.build(name, ...)``. A new component is a builder in its module and one line here
(or ``PRIORS.register(name, description, builder)`` from a user's code), not an edit of
every ``if name == ...`` chain.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any, Callable


class Registry:
    """name -> (builder or "module:attribute", one-line description), in declared order."""

    def __init__(self, kind: str, entries: list[tuple[str, str, str]] = ()):
        self.kind = kind
        self._items: dict[str, tuple[Callable[..., Any] | str, str]] = {}
        for name, description, where in entries:
            self.register(name, description, where)

    def register(self, name: str, description: str, builder: Callable[..., Any] | str) -> None:
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._items[name] = (builder, description)

    def names(self) -> tuple[str, ...]:
        return tuple(self._items)

    def get(self, name: str) -> Callable[..., Any]:
        if name not in self._items:
            raise ValueError(f"unknown {self.kind} {name!r}; choose {', '.join(self._items)}")
        builder, description = self._items[name]
        if isinstance(builder, str):
            module, attribute = builder.split(":")
            builder = getattr(importlib.import_module(f"{__package__}.{module}"), attribute)
            self._items[name] = (builder, description)
        return builder

    def build(self, name: str, *args, **offered):
        """Call ``name``'s builder with ``args`` and, of the keyword arguments ``offered``,
        exactly those its signature declares. A builder that declares one not offered (a
        misspelt name) or takes ``**kwargs`` fails here, naming it, instead of being
        handed everything and silently ignoring what it misspells."""
        builder = self.get(name)
        params = list(inspect.signature(builder).parameters.values())
        if any(p.kind is p.VAR_KEYWORD for p in params):
            raise TypeError(f"the builder of {self.kind} {name!r} takes **kwargs; declare the "
                            f"arguments it uses, from: {', '.join(offered)}")
        named = [p.name for p in params[len(args):]
                 if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        unknown = [n for n in named if n not in offered]
        if unknown:
            raise TypeError(f"the builder of {self.kind} {name!r} declares {', '.join(unknown)}, "
                            f"which is not offered (offered: {', '.join(offered)})")
        return builder(*args, **{n: offered[n] for n in named})

    def describe(self) -> str:
        """'name: description; ...' for help texts."""
        return "; ".join(f"{n}: {d}" if d else n for n, (_, d) in self._items.items())


PRIORS = Registry("prior", [
    ("normal", "N(0, I)", "priors:_normal"),
    ("diag-normal", "N(0, diag(model.prior_scales^2))", "priors:_diag_normal"),
    ("mixture", "a learnable mixture of model.prior_components Gaussians", "priors:_mixture"),
    ("vamp", "VampPrior of model.prior_components pseudo-inputs", "priors:_vamp"),
])
LIKELIHOODS = Registry("likelihood", [
    ("bernoulli", "binary or grey-level data in [0, 1]", "likelihoods:_bernoulli"),
    ("gaussian", "N(f(z), sigma^2 I), sigma = model.sigma", "likelihoods:_gaussian"),
    ("gaussian-learned", "sigma from the decoder, floored at model.min_sigma",
     "likelihoods:_gaussian_learned"),
])
ARCHITECTURES = Registry("architecture", [
    ("mlp", "fully connected layers of model.hidden widths (model.gated units)",
     "networks:MLPArchitecture"),
    ("conv", "stride-2 convolutions of model.conv_channels, for images", "networks:ConvArchitecture"),
])
MODEL_KINDS = Registry("model kind", [
    ("vae", "one Gaussian latent level (an integer model.latent_dim)", "model:_one_level"),
    ("hierarchical", "Gaussian levels z1 ... zL (a list model.latent_dim)", "hierarchy:_build"),
    ("conditional", "q(z|x, y), p(x|z, y) on labelled data (model.conditional)", "conditional:_build"),
])
