"""vaekit: variational auto-encoders on PyTorch.

    >>> import vaekit
    >>> vae = vaekit.load_run("runs/my-run")      # the trained VAE, in eval mode
    >>> q = vae.encode(x)                         # q(z|x), a torch distribution
    >>> p = vae.decode(q.mean)                    # p(x|z)
    >>> vae.prior.log_prob(z)                     # one value per example
"""

__version__ = "0.1.0"

from .config import Config  # noqa: E402
from .errors import VaekitError  # noqa: E402
from .evaluate import evaluate  # noqa: E402
from .model import VAE, build_vae  # noqa: E402
from .runs import evaluate_run, load_run, train_and_evaluate  # noqa: E402

__all__ = ["Config", "VAE", "VaekitError", "build_vae", "evaluate", "evaluate_run", "load_run",
           "train_and_evaluate", "__version__"]
