"""Experiment tracking: TensorBoard through ``torch.utils.tensorboard`` (``--tensorboard``).

A trainer callback writes every number of the epoch's ``metrics.jsonl`` line as a scalar
(``train/elbo``, ``valid/kl``, ...) and, for image data, the decoded means of 16 fixed draws
from the prior, so the same z can be watched improving epoch by epoch. Event files go to
``RUN/tensorboard/``: ``tensorboard --logdir RUN/tensorboard``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .errors import VaekitError


def require_tensorboard():
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise VaekitError("--tensorboard needs the tensorboard package: pip install tensorboard "
                          "(or pip install 'vaekit[tensorboard]')") from None
    return SummaryWriter


def tensorboard_callbacks(run_dir: str | Path, model, seed: int = 0):
    """(callbacks for the Trainer, the writer to close when training ends)."""
    writer = require_tensorboard()(log_dir=str(Path(run_dir) / "tensorboard"))
    spec = model.data_spec
    gen = torch.Generator().manual_seed(seed)
    from .explore import prior_sample

    fixed_z = prior_sample(model, 16, int(torch.randint(2**31 - 1, (1,), generator=gen)))

    def on_epoch_end(trainer, row: dict) -> None:
        if not trainer.world.main:
            return
        step = row["epoch"]
        for key, value in row.items():
            if key != "epoch" and isinstance(value, (int, float)):
                writer.add_scalar(key.replace("_", "/", 1), value, step)
        if spec is not None and spec.image:
            was_training = trainer.model.training
            trainer.model.eval()
            with torch.no_grad():
                images = trainer.model.decode(fixed_z.to(trainer.device)).mean.float().cpu()
            trainer.model.train(was_training)
            images = spec.inverse(images).clamp(0, 1)  # (16, C, H, W)
            writer.add_images("samples/prior_means", images, step)
        writer.flush()

    return {"on_epoch_end": [on_epoch_end]}, writer
