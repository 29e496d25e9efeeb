"""One way to say "auto": a field is a value, ``auto`` (resolved once, by training.defaults) or explicitly off."""

from __future__ import annotations

import pytest
import yaml

from nextclass.config import AUTO, ConfigError, TrainConfig, auto_fields, load_config, make_config, unresolved
from nextclass.data.sources import load_source
from nextclass.training.defaults import resolve


def test_auto_is_the_default_of_every_choose_for_me_field():
    assert set(auto_fields()) >= {"model", "img_size", "in_chans", "epochs", "batch_size", "optimizer", "lr",
                                  "weight_decay", "scheduler", "ema", "augment", "tta", "amp", "channels_last",
                                  "workers", "threads", "device", "name"}
    for name, f in TrainConfig.model_fields.items():
        assert f.description, f"{name}: every field documents its values"
        if f.default is None:  # None is left only where it means off, and the description says what off is
            assert "none:" in f.description, f"{name}: default None without a 'none: ...' meaning"
        if f.default == AUTO:
            assert "auto:" in f.description, f"{name}: default auto without an 'auto: ...' rule"


def test_old_null_loads_as_auto_and_off_words_load_as_off(tmp_path):
    old = {"data": "digits", **{k: None for k in auto_fields()}, "ema_decay": None, "clip_grad": None,
           "patience": None, "drop_path": None, "pretrained": None}
    (tmp_path / "old.yaml").write_text(yaml.safe_dump(old))
    cfg = load_config(tmp_path / "old.yaml")
    assert unresolved(cfg) == list(auto_fields())
    assert (cfg.ema_decay, cfg.clip_grad, cfg.patience, cfg.drop_path) == ("schedule", 0, 0, 0)
    assert cfg.pretrained == AUTO  # an auto field now (weights on this machine): off is the word none
    assert "pretrained: none" in make_config(data="x", pretrained="none").to_yaml()  # so it reads back as off
    assert make_config(data="x", pretrained="none").pretrained is None  # was truthy: "none" counted as pretrained
    assert make_config(data="x", max_minutes="none").max_minutes is None
    cfg.lr = None  # assignment is validated the same way
    assert cfg.lr == AUTO


def test_an_auto_field_error_names_the_field_once():
    with pytest.raises(ConfigError) as e:
        make_config(data="x", img_size="big")
    msg = str(e.value)
    assert msg.count("img_size") == 1 and "or 'auto'" in msg and "literal" not in msg
    with pytest.raises(ConfigError, match="optimizer: Input should be 'auto', 'adamw'"):
        make_config(data="x", optimizer="lion")


def test_resolve_leaves_nothing_auto_and_logs_each_choice():
    source = load_source("digits")
    res = resolve(make_config(data="digits"), source, 1259)
    assert unresolved(res.cfg) == ["hflip"]  # the mirror check needs the decoded images: settle_hflip, then saved
    res.cfg = res.cfg.model_copy(update={"hflip": False})
    assert "auto" not in res.cfg.to_yaml().replace("auto_augment", "")
    logged = {n.split(" = ")[0] for n in res.notes}
    assert {"model", "in_chans", "img_size", "device", "batch_size", "lr", "workers", "threads", "name"} <= logged
    assert res.cfg.name == "fast_resnet-digits" and res.cfg.in_chans == 1 and res.cfg.probe_epochs == 0
    again = resolve(res.cfg, source, 1259)  # resume: a resolved config does not change, nothing is re-chosen
    assert again.cfg == res.cfg and again.notes == []


def test_saved_run_config_has_no_auto(tiny_run):
    text = (tiny_run / "config.yaml").read_text()
    saved = yaml.safe_load(text)
    assert [k for k, v in saved.items() if v == AUTO] == []
    assert saved["name"] == "tiny" and saved["drop_rate"] == 0.5 and saved["ema_decay"] == "schedule"
