"""How evaluation sizes its chunks: the memory of one latent sample, counted over the whole
log-weight computation (decoder, likelihood, prior, posterior, a hierarchy's levels)."""

import torch

from vaekit import config as config_mod
from vaekit.evaluation import bytes_per_sample, plan_chunks
from vaekit.model import build_vae

D, HIDDEN = 20, 32


def _model(prior="normal", latent=8, components=50):
    cfg = config_mod.merge(config_mod.Config(), {"model": {
        "latent_dim": latent, "hidden": [HIDDEN], "likelihood": "bernoulli", "prior": prior,
        "prior_components": components}}).validate()
    torch.manual_seed(0)
    return build_vae(cfg.model, (D,), "bernoulli").eval()


X = torch.zeros(3, D)


def test_a_sample_costs_at_least_its_own_activations():
    """z, the hidden layer and the logits are float32 tensors made for every sample."""
    assert bytes_per_sample(_model(), X) >= 4 * (8 + HIDDEN + D)


def test_the_vamppriors_matrix_and_a_hierarchys_levels_are_counted():
    """A VampPrior's log p(z) forms a float64 row of its components for every sample: that
    is at least 8 bytes per component more than N(0, I) costs (the decoder-only count that
    sized chunks before gave both the same). A second level adds its networks' outputs."""
    plain = bytes_per_sample(_model(), X)
    for components in (100, 400):
        vamp = bytes_per_sample(_model("vamp", components=components), X)
        assert vamp - plain >= 8 * components
    assert bytes_per_sample(_model(latent=[8, 4]), X) > plain


def test_a_chunk_stays_within_its_memory_bound():
    for model in (_model(), _model("vamp", components=400), _model(latent=[8, 4])):
        per = bytes_per_sample(model, X)
        for mib in (1, 3):
            batch, chunk = plan_chunks(model, torch.zeros(1000, D), 5000, mib)
            assert batch * chunk * per <= mib * 2**20
            assert batch * (chunk + 1) * per > mib * 2**20 or chunk == 5000  # and uses it
