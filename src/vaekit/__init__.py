"""vaekit: variational auto-encoders on PyTorch.

    >>> import vaekit
    >>> vae = vaekit.load_run("runs/my-run")      # the trained VAE, in eval mode
    >>> q = vae.encode(x)                         # q(z|x), a torch distribution
    >>> p = vae.decode(q.mean)                    # p(x|z)
    >>> vae.prior.log_prob(z)                     # one value per example

The names below are imported on first use, so `vaekit --help` and `vaekit presets` do not
wait for torch to load.
"""

__version__ = "0.1.0"

_LAZY = {
    "Config": "config", "VaekitError": "errors", "evaluate": "evaluation", "VAE": "model",
    "build_vae": "model", "evaluate_run": "rundir", "load_run": "rundir", "train_and_evaluate": "runs",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'vaekit' has no attribute {name!r}")


def __dir__():
    return __all__
