"""How evaluation sizes its chunks: the memory of one latent sample, counted over the whole
log-weight computation (decoder, likelihood, prior, posterior, a hierarchy's levels); and how
an interrupted evaluation resumes."""

import numpy as np
import pytest
import torch

from vaekit import checkpoint as ckpt
from vaekit import config as config_mod
from vaekit import evaluation
from vaekit.evaluation import bytes_per_sample, evaluate, plan_chunks
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


def _stop_after(monkeypatch, batches: int) -> list:
    """importance_sampled counting its calls on batches of images (not the one-image calls that
    size the chunks) and raising KeyboardInterrupt (Ctrl-C) on the call after ``batches``
    (never, with a negative count)."""
    real, calls = evaluation.importance_sampled, []

    def counted(model, x, *args, **kwargs):
        if len(x) == 1:
            return real(model, x, *args, **kwargs)
        if len(calls) == batches:
            raise KeyboardInterrupt
        calls.append(1)
        return real(model, x, *args, **kwargs)

    monkeypatch.setattr(evaluation, "importance_sampled", counted)
    return calls


def _images(n=600, seed=1):
    return torch.rand(n, D, generator=torch.Generator().manual_seed(seed)).bernoulli()


SAME = ("elbo", "reconstruction", "kl", "log_px", "log_px_stderr", "active_units", "unit_variances",
        "levels")


@pytest.mark.parametrize("latent", [8, [8, 4]])
def test_an_interrupted_evaluation_resumes_to_the_uninterrupted_numbers(tmp_path, monkeypatch, latent):
    model, x = _model("vamp", latent=latent), _images()
    reference = evaluate(model, x, 7, per_example=True)
    kept = tmp_path / "progress.safetensors"
    with monkeypatch.context() as m:
        _stop_after(m, 2)  # batches of 256 images: Ctrl-C during the third
        with pytest.raises(KeyboardInterrupt):
            evaluate(model, x, 7, resume_file=kept)
    tensors, meta = ckpt.load(kept)
    assert meta["done"] == 512 and tensors["log_px"].shape == (512,)
    np.testing.assert_array_equal(tensors["log_px"].numpy(), reference["log_px_per_example"][:512])
    calls = _stop_after(monkeypatch, -1)
    resumed = evaluate(model, x, 7, per_example=True, resume_file=kept)
    assert len(calls) == 1  # the last batch only
    assert not kept.exists()
    np.testing.assert_array_equal(resumed["log_px_per_example"], reference["log_px_per_example"])
    assert {k: resumed.get(k) for k in SAME} == {k: reference.get(k) for k in SAME}
    assert resumed["seconds"] >= meta["seconds"]  # the wall time counts the interrupted part
    assert resumed["resumed_from"] == 512 and reference["resumed_from"] == 0


def test_progress_of_another_evaluation_or_a_corrupt_file_is_ignored(tmp_path, monkeypatch):
    model, x = _model(), _images()
    kept = tmp_path / "progress.safetensors"

    def interrupted(model, x, seed=1234):
        with monkeypatch.context() as m:
            _stop_after(m, 1)
            with pytest.raises(KeyboardInterrupt):
                evaluate(model, x, 7, seed=seed, resume_file=kept)
        assert kept.exists()

    def resumed_equals_fresh(model, x, seed=1234):
        calls = _stop_after(monkeypatch, -1)
        got = evaluate(model, x, 7, seed=seed, resume_file=kept, per_example=True)
        assert len(calls) == 3 and not kept.exists()  # every batch computed again
        want = evaluate(model, x, 7, seed=seed, per_example=True)
        np.testing.assert_array_equal(got["log_px_per_example"], want["log_px_per_example"])

    interrupted(model, x)
    resumed_equals_fresh(model, x, seed=99)  # another seed
    interrupted(model, x)
    other = _model()
    with torch.no_grad():
        next(other.parameters()).add_(0.01)  # the same shapes, other weights
    resumed_equals_fresh(other, x)
    interrupted(model, x)
    resumed_equals_fresh(model, _images(seed=2))  # other images
    kept.write_bytes(b"not a checkpoint" * 20)
    resumed_equals_fresh(model, x)
