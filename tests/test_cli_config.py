"""`nextclass train`'s flags and TrainConfig cannot drift: every field has a flag or is listed as config-file-only,
each flag's help and default come from its field, and each flag lands in its field."""

from __future__ import annotations

import types
import typing

import pytest
import typer
from typer.testing import CliRunner

from nextclass.cli import app
from nextclass.commands.train import CLI_ONLY, CONFIG_FILE_ONLY, flag_fields, train
from nextclass.config import TrainConfig, coerce_config, field_choices, field_help


def _train_params() -> dict:
    cmd = typer.main.get_command(app).commands["train"]
    return {p.name: p for p in cmd.params}


def _value_types(annotation) -> set[type]:
    """The Python types of a field's (or flag's) values: ``auto`` and other literal words are ``str``."""
    out, todo = set(), [annotation]
    while todo:
        t = todo.pop()
        origin = typing.get_origin(t)
        if origin is typing.Annotated:
            todo.append(typing.get_args(t)[0])
        elif origin in (typing.Union, types.UnionType):
            todo += [a for a in typing.get_args(t) if a is not type(None)]
        elif origin is typing.Literal:
            out |= {type(a) for a in typing.get_args(t)}
        else:
            out.add(t if t in (int, float, bool) else str)
    return out


def test_every_field_has_a_flag_or_is_config_file_only():
    fields = set(TrainConfig.model_fields)
    flags = set(flag_fields().values())
    only = set(CONFIG_FILE_ONLY)
    assert not (fields - flags - only), f"fields with neither a train flag nor a CONFIG_FILE_ONLY entry: {sorted(fields - flags - only)}"
    assert not (flags - fields), f"train flags that name no TrainConfig field: {sorted(flags - fields)} (CLI_ONLY?)"
    assert not (only - fields), f"CONFIG_FILE_ONLY names unknown fields: {sorted(only - fields)}"
    assert not (flags & only), f"fields with a flag listed as config-file-only too: {sorted(flags & only)}"
    assert set(_train_params()) == set(flag_fields()) | set(CLI_ONLY)


def test_flag_help_default_and_type_match_the_field():
    params, hints = _train_params(), typing.get_type_hints(train)
    for param, field in flag_fields().items():
        p, f = params[param], TrainConfig.model_fields[field]
        assert f.description, f"{field}: no description (the flag's help comes from it)"
        assert p.help == field_help(field), f"--{param}: help differs from the {field} field"
        assert p.default is None, f"--{param}: default {p.default!r}; a flag left out must mean 'the config's value'"
        if not f.is_required():
            assert p.help.endswith(f"Default: {field_help(field).rsplit('Default: ', 1)[1]}"), param
        for choice in field_choices(field):
            assert str(choice) in p.help or isinstance(choice, bool), f"--{param}: help does not list {choice!r}"
        (kind,) = _value_types(hints[param])
        assert kind in _value_types(f.annotation), f"--{param} takes {kind.__name__}, {field} is {f.annotation}"


def test_field_help_follows_the_description():
    assert TrainConfig.model_fields["mixup"].description == "mixup alpha; 0: off"
    assert field_help("mixup") == "mixup alpha; 0: off. Default: 0.0."
    assert field_help("epochs").endswith("Default: auto.")
    assert field_help("max_minutes").endswith("none: no budget. Default: none.")


# one value per flag, each different from the field's default
SAMPLE = {
    "model": ("--model", "resnet18"), "pretrained": ("--pretrained", "timm"), "recipe": ("--recipe", "finetune"),
    "head": ("--head", "mlp"), "img_size": ("--img-size", "48"), "epochs": ("-e", "3"),
    "max_minutes": ("--max-minutes", "2.5"), "batch_size": ("-b", "16"), "lr": ("--lr", "0.01"),
    "optimizer": ("--optimizer", "sgd"), "weight_decay": ("--weight-decay", "0.001"),
    "scheduler": ("--scheduler", "onecycle"), "label_smoothing": ("--label-smoothing", "0.05"),
    "patience": ("--patience", "3"), "ema": ("--no-ema",), "augment": ("--augment", "strong"),
    "hflip": ("--no-hflip",), "tta": ("--tta",), "split": ("--split", "60/20/20"), "seed": ("--seed", "7"),
    "target_accuracy": ("--target-accuracy", "0.9"),
    "coverage": ("--coverage", "0.9"), "device": ("--device", "cpu"), "workers": ("--workers", "2"),
    "threads": ("--threads", "1"), "compile": ("--compile",), "cache_dir": ("--cache-dir", "/tmp/c"),
    "download": ("--download",), "corrections": ("--corrections", "c.jsonl"), "task": ("--task", "multi-label"), "output": ("-o", "out"), "name": ("--name", "x"), "track": ("--track", "mlflow"),
    "tracking_uri": ("--tracking-uri", "sqlite:///t.db"), "neighbor_thumbnails": ("--no-neighbor-thumbnails",),
}


def test_each_flag_lands_in_its_field(monkeypatch):
    import nextclass

    assert set(SAMPLE) | {"data"} == set(flag_fields().values()), "a new flag needs a SAMPLE value here"
    seen = {}
    monkeypatch.setattr(nextclass, "train", lambda config=None, **kw: seen.update(kw) or "runs/x")
    args = ["train", "digits"] + [a for v in SAMPLE.values() for a in v]
    r = CliRunner().invoke(app, args, prog_name="nextclass")
    assert r.exit_code == 0, r.output
    cfg = coerce_config({k: v for k, v in seen.items() if k not in ("progress", "nproc")})
    default = TrainConfig(data="digits")
    for field in SAMPLE:
        assert getattr(cfg, field) != getattr(default, field), f"--{field} did not reach the config"


def test_flags_left_out_do_not_override_the_config_file(monkeypatch, tmp_path):
    import nextclass

    (tmp_path / "c.yaml").write_text("data: digits\nepochs: 7\nhflip: false\nlr: auto\n")
    seen = {}
    monkeypatch.setattr(nextclass, "train", lambda config=None, **kw: seen.update(kw, config=config) or "runs/x")
    r = CliRunner().invoke(app, ["train", "-c", str(tmp_path / "c.yaml")], prog_name="nextclass")
    assert r.exit_code == 0, r.output
    cfg = coerce_config(seen.pop("config"), **{k: v for k, v in seen.items() if k not in ("progress", "nproc")})
    assert (cfg.epochs, cfg.hflip, cfg.lr) == (7, False, "auto")


@pytest.mark.parametrize("data", ["digits"])
def test_hflip_help_is_true_to_the_code(data):
    """hflip auto: the help says the data decides, and on digits the decoded images turn flips (and the flipped
    test-time view) off; an explicit value is kept as given."""
    import numpy as np

    from nextclass.data.sources import load_source
    from nextclass.metrics.tta import views_from_config
    from nextclass.training.defaults import augment_for, resolve, settle_hflip

    text = field_help("hflip")
    assert "auto: decided from the training images" in text
    cfg = coerce_config({"data": data, "model": "simple_cnn", "augment": "light"})
    res = resolve(cfg, load_source(data), 100)
    assert res.cfg.hflip == "auto"  # settled once the images are decoded
    from sklearn.datasets import load_digits

    d = load_digits()
    arr = (d.images * 16).clip(0, 255).astype(np.uint8)[..., None]
    settled, note = settle_hflip(res.cfg, arr, np.arange(len(arr)), d.target)
    assert settled.hflip is False and "do not look like their class" in note
    assert augment_for(settled).hflip is False and "hflip" not in views_from_config(settled)
    assert settle_hflip(res.cfg.model_copy(update={"hflip": True}), arr, np.arange(10), d.target[:10])[0].hflip is True
