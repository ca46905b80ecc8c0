"""Configuration: defaults, presets, files and overrides, refused early with clear reasons."""

import json
import math
import os

import pytest
from conftest import run_cli

from vaekit import config as config_mod
from vaekit.errors import ConfigError


def test_overrides_parse_toml_values_and_apply_in_order(tmp_path):
    f = tmp_path / "run.toml"
    f.write_text('[model]\nlatent_dim = 8\nhidden = [64, 32]\n[train]\nlr = 0.01\n')
    cfg = config_mod.resolve("latent-2d", f, [config_mod.parse_override("model.latent_dim=3"),
                                               config_mod.parse_override("train.device=auto")])
    assert cfg.model.latent_dim == 3  # override beats file beats preset
    assert cfg.model.hidden == [64, 32] and cfg.train.lr == 0.01
    assert cfg.train.epochs == 60  # from the preset
    assert cfg.train.device == "auto"  # a bare word is taken as a string


def test_written_config_reads_back_identically(tmp_path):
    cfg = config_mod.resolve("mnist-mlp", None, [config_mod.parse_override('data.name="a \\"b\\""')])
    (tmp_path / "c.toml").write_text(config_mod.to_toml(cfg))
    again = config_mod.resolve(None, tmp_path / "c.toml")
    assert again == cfg


@pytest.mark.parametrize("override, words", [
    ("model.latnt_dim=2", ["unknown key", "model.latent_dim"]),
    ("modle.latent_dim=2", ["unknown section", "model"]),
    ("model.latent_dim=2.5", ["model.latent_dim", "integer"]),
    ("model.latent_dim=0", ["model.latent_dim", "positive"]),
    ("train.lr=-1", ["train.lr", "positive"]),
    ("model.hidden=5", ["model.hidden", "list"]),
    ("model.gated=1", ["model.gated", "true or false"]),
    ("model.prior=\"gauss\"", ["model.prior", "normal"]),
    ("data.valid_fraction=1.5", ["data.valid_fraction"]),
    ("latent_dim=2", ["section.key", "model.latent_dim"]),
])
def test_bad_settings_are_refused_with_the_key_and_a_fix(override, words):
    with pytest.raises(ConfigError) as err:
        config_mod.resolve(None, None, [config_mod.parse_override(override)])
    for w in words:
        assert w in str(err.value)


def test_diag_normal_prior_needs_one_scale_per_latent_unit():
    with pytest.raises(ConfigError, match="prior_scales"):
        config_mod.resolve(None, None, [{"model": {"prior": "diag-normal", "latent_dim": 2,
                                                   "prior_scales": [1.0]}}])


def test_unknown_preset_and_bad_toml(tmp_path):
    with pytest.raises(ConfigError, match="unknown preset"):
        config_mod.resolve("mnist-mpl")
    (tmp_path / "bad.toml").write_text("[model\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        config_mod.resolve(None, tmp_path / "bad.toml")
    with pytest.raises(ConfigError, match="does not exist"):
        config_mod.resolve(None, tmp_path / "missing.toml")


def test_every_preset_is_valid():
    assert {"mnist-mlp", "latent-2d", "conv-28"} <= set(config_mod.preset_names())
    for name in config_mod.preset_names():
        config_mod.resolve(name)


def test_a_preset_can_start_from_another(monkeypatch):
    # fmnist-best names fmnist-hvae as its base: its resolved config is the base's, key by key,
    # except the four keys its own file sets
    best, base = (config_mod.resolve(n).to_dict() for n in ("fmnist-best", "fmnist-hvae"))
    changed = {(s, k): v for s in best for k, v in best[s].items() if base[s][k] != v}
    assert changed == {("model", "architecture"): "conv", ("model", "conv_channels"): [16, 32],
                       ("train", "epochs"): 485, ("train", "lr_decay_start"): 300}
    assert best.keys() == base.keys() and all(best[s].keys() == base[s].keys() for s in best)
    files = {"parent": '[model]\nhidden = [7, 5]\nlatent_dim = 3\n[train]\nepochs = 4\n',
             "child": 'base = "parent"\n[model]\nlatent_dim = 2\n',
             "loop": 'base = "loop"\n', "lost": 'base = "nowhere"\n',
             "ping": 'base = "pong"\n', "pong": 'base = "ping"\n'}
    monkeypatch.setattr(config_mod, "preset_names", lambda: sorted(files))
    monkeypatch.setattr(config_mod, "_preset_text", files.__getitem__)
    cfg = config_mod.resolve("child")
    # the base's keys, the child's on top, a section merged key by key, not replaced
    assert (cfg.model.hidden, cfg.model.latent_dim, cfg.train.epochs) == ([7, 5], 2, 4)
    assert config_mod.load_preset("child") == {"model": {"hidden": [7, 5], "latent_dim": 2},
                                               "train": {"epochs": 4}}
    for name in ("loop", "lost", "ping"):
        with pytest.raises(ConfigError, match="unknown base preset"):
            config_mod.resolve(name)


@pytest.mark.parametrize("name, threads", [("bmnist-vae", 1), ("bmnist-best", 1), ("fmnist-vae", 1),
                                           ("fmnist-vamp", 1), ("fmnist-best", 2), ("bmnist-fast", 1), ("bmnist-hvae", 2),
                                           ("fmnist-hvae", 2)])
def test_likelihood_presets_pin_the_recorded_thread_count(name, threads):
    """Each recorded run of benchmarks/RESULTS.md used a fixed number of threads; a preset
    left at torch's default would re-run it with another summation order, another trajectory
    and another NLL. --threads and --set still override it."""
    assert config_mod.resolve(name).train.threads == threads
    assert config_mod.resolve(name, overrides=[{"train": {"threads": 3}}]).train.threads == 3


@pytest.mark.parametrize("name", config_mod.preset_names())
def test_every_preset_trains_an_epoch(name, tmp_path):
    """Each preset, as `vaekit train --preset NAME` runs it, for one epoch on a few hundred
    examples (the benchmark data presets need VAEKIT_DATA_DIR): the run's recorded config is
    the preset's own, key for key, but for the few keys this command shortens, and the run
    reports finite numbers."""
    needs = config_mod.load_preset(name).get("data", {}).get("name", "default")
    if needs in ("binarized-mnist", "fashion-mnist", "mnist") and not os.environ.get("VAEKIT_DATA_DIR"):
        pytest.skip("VAEKIT_DATA_DIR is not set to the benchmark data folder")
    shortened = {"train.epochs": 1, "data.max_train": 300, "eval.importance_samples": 2,
                 "report.enabled": False, "train.progress": False, "train.threads": 1}
    res = run_cli("train", "--preset", name, "--epochs", "1", "--set", "data.max_train=300",
                  "--importance-samples", "2", "--no-report", "--quiet", "--set",
                  "train.threads=1", "--out", str(tmp_path / "run"))
    assert res.returncode == 0, res.stderr
    recorded = config_mod.flatten(config_mod.load_toml(tmp_path / "run" / "config.toml"))
    preset = config_mod.flatten(config_mod.resolve(name).to_dict())
    assert recorded == {**preset, **shortened}
    ev = json.loads((tmp_path / "run" / "evaluation.json").read_text())
    assert math.isfinite(ev["elbo"]) and math.isfinite(ev["log_px"]) and ev["importance_samples"] == 2


def test_a_registry_passes_each_builder_only_what_it_declares():
    # builders name their arguments; one that misspells a name, or takes **kwargs to swallow
    # whatever it is given, fails where it is built, naming the argument
    from vaekit.registry import Registry

    reg = Registry("prior", [])
    reg.register("good", "", lambda latent_dim, *, components: (latent_dim, components))
    reg.register("misspelt", "", lambda latent_dim, *, componets: None)
    reg.register("swallows", "", lambda latent_dim, **_: None)
    assert reg.build("good", 3, components=2, scales=None) == (3, 2)
    with pytest.raises(TypeError, match="componets.*not offered"):
        reg.build("misspelt", 3, components=2, scales=None)
    with pytest.raises(TypeError, match=r"\*\*kwargs"):
        reg.build("swallows", 3, components=2)


def test_the_readme_lists_what_a_resume_may_change():
    # the README's "What a resume may change" paragraph names every key of the two lists
    import re

    from conftest import ROOT

    text = (ROOT / "README.md").read_text()
    para = text[text.index("**What a resume may change.**"):text.index("[origin]\nrun =")]
    named = set(re.findall(r"`([a-z_.]+)`", para))
    for key in config_mod.BRANCH_SAFE_KEYS:
        section, name = key.split(".")
        if name == "*":
            assert f"`[{section}]`" in para, key
        else:
            assert key in named or name in named, key
