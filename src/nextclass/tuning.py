"""Hyper-parameter search with Optuna: ``nextclass tune DATA --trials N`` / :func:`tune`.

Each trial is an ordinary training run (``<output>/<study>/trials/trial-NNN``) whose config is the
base config plus the trial's suggestions. The objective is the **validation** accuracy of the
selected checkpoint (the test split is never evaluated while tuning). The sampler is TPE; a
MedianPruner stops a trial whose validation accuracy, reported after every epoch through the
training loop's per-epoch callback, falls below the median of earlier trials at the same epoch.

The study lives in SQLite (``study.db`` in the output folder), so re-running the same command
resumes it: ``--trials`` is the total wanted, finished and pruned trials are kept, and a trial that
was running when the process died is marked failed and queued again with the same parameters.

Search space (fields you set yourself are fixed and not searched; ``space=`` overrides any range):
``lr`` (log), ``weight_decay`` (log), ``batch_size``, ``drop_rate``, ``augment`` (strength),
``label_smoothing`` and ``recipe`` (only recipes valid for the model: ``scratch`` without
pretrained weights; ``linear-probe``/``finetune``/``two-phase`` with them).

Outputs in ``<output>/<study>/``: ``study.db``, ``trials.csv``, ``trials.png`` (optimisation history
and per-epoch curves), ``best.yaml`` (validated; ``nextclass train --config best.yaml`` trains it)
and ``summary.json``.
"""

from __future__ import annotations

import os
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from nextclass.config import AUTO, ConfigError, TrainConfig, load_config, make_config
from nextclass.rundir import RunDir
from nextclass.utils import atomic_write_json, atomic_write_text, log

__all__ = ["tune", "TuneResult", "default_space", "parse_space", "trials_table", "plot_trials", "LOG_PARAMS"]

LOG_PARAMS = frozenset({"lr", "weight_decay"})
# Fields a trial may never change: where the run goes and what it measures.
_TRIAL_FIXED = {"report": False, "robustness": False, "evaluate_test": False, "track": "none"}


@dataclass
class TuneResult:
    """What :func:`tune` found. ``config`` is the best trial's config (validated, ready for ``train``)."""

    config: TrainConfig
    value: float
    params: dict
    output: Path
    study: Any  # optuna.Study


def _recipes_for(base: TrainConfig) -> list[str]:
    if base.pretrained in (AUTO, None):  # auto resolves per trial; the space is that of training from scratch
        return ["scratch"]
    return ["linear-probe", "finetune", "two-phase"]


def default_space(base: TrainConfig) -> dict[str, Any]:
    """The search space for ``base``: ``(low, high)`` float ranges and lists of choices.

    Example:
        >>> from nextclass.config import make_config
        >>> default_space(make_config(data="digits"))["recipe"]
        ['scratch']
    """
    lr = (1e-5, 1e-3) if base.pretrained not in (AUTO, None) else (1e-4, 1e-2)
    if base.optimizer == "sgd":  # SGD wants ~50x the AdamW rate (as the lr default in train.setup)
        lr = (lr[0] * 50, lr[1] * 50)
    return {"lr": lr, "weight_decay": (1e-5, 0.1), "batch_size": [16, 32, 64, 128], "drop_rate": (0.0, 0.5),
            "augment": ["none", "light", "standard", "strong"], "label_smoothing": (0.0, 0.2),
            "recipe": _recipes_for(base)}


def parse_space(items: list[str] | None) -> dict[str, Any]:
    """CLI ``--space`` items: ``lr=1e-4:1e-2`` (range), ``batch_size=16,32`` (choices), ``augment=light`` (one).

    Example:
        >>> parse_space(["lr=1e-4:1e-2", "batch_size=16,32"])
        {'lr': (0.0001, 0.01), 'batch_size': [16, 32]}
    """
    out: dict[str, Any] = {}
    for it in items or []:
        if "=" not in it:
            raise ValueError(f"--space {it!r}: expected KEY=LOW:HIGH or KEY=A,B,C")
        k, v = (s.strip() for s in it.split("=", 1))
        k = k.replace("-", "_")
        if ":" in v:
            lo, hi = (float(yaml.safe_load(x)) for x in v.split(":", 1))
            if not lo < hi:
                raise ValueError(f"--space {it!r}: LOW must be below HIGH")
            out[k] = (lo, hi)
        else:
            out[k] = [yaml.safe_load(x) for x in v.split(",")]
    return out


def _suggest(trial, space: dict[str, Any]) -> dict:
    params = {}
    for k, v in space.items():
        if isinstance(v, tuple):
            params[k] = trial.suggest_float(k, float(v[0]), float(v[1]), log=k in LOG_PARAMS)
        elif len(v) == 1:
            params[k] = v[0]  # a single choice is a fixed value, not a search dimension
        else:
            params[k] = trial.suggest_categorical(k, list(v))
    return params


def _base_config(config: Any, overrides: dict) -> TrainConfig:
    if isinstance(config, TrainConfig):
        d = config.model_dump(exclude_unset=True)
        d.update(overrides)
        return make_config(**d)
    if isinstance(config, dict):
        return make_config(**{**config, **overrides})
    if isinstance(config, (str, os.PathLike)) and str(config).endswith((".yaml", ".yml")):
        return load_config(config, **overrides)
    if config is not None:
        overrides = {"data": str(config), **overrides}
    return load_config(None, **overrides)


def _pruning_callback(trial):
    import optuna

    def report(row: dict, state: dict) -> None:
        value = float(row["val_acc"])
        if value != value:  # no validation split: nothing to prune on
            return
        trial.report(value, int(row["epoch"]))
        if trial.should_prune():
            raise optuna.TrialPruned(f"epoch {row['epoch']}: val_acc {value:.4f} below the median of earlier trials")

    return report


def _objective(base: dict, space: dict, out: Path, progress: bool):
    from nextclass.training.fit import fit

    def objective(trial) -> float:
        params = _suggest(trial, space)
        cfg = make_config(**{**base, **params, **_TRIAL_FIXED, "output": str(out / "trials"),
                             "name": f"trial-{trial.number:03d}"})
        log(f"[bold]trial {trial.number}[/]: " + ", ".join(f"{k}={_fmt(v)}" for k, v in params.items()))
        run = fit(cfg, progress=progress, callbacks=(_pruning_callback(trial),))
        trial.set_user_attr("run_dir", str(run))
        val = RunDir(run).read_metrics().get("val")
        if not val:
            raise ConfigError("tune: the data has no validation images to score trials on")
        return float(val["accuracy"])

    return objective


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _requeue_stale(study) -> int:
    """Trials left RUNNING by a killed process: mark failed, queue their parameters again."""
    from optuna.trial import TrialState

    stale = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.RUNNING]
    for t in stale:
        study._storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL)
        study.enqueue_trial(dict(t.params), skip_if_exists=False)
    return len(stale)


def _check_inputs(base: TrainConfig) -> None:
    """The data and the device, checked once before the study: a bad DATA is one error line, not a failed trial
    logged with its traceback by Optuna (and no study folder is made for it)."""
    from nextclass.data.sources import load_source
    from nextclass.dist import check_device

    check_device(base.device)
    load_source(base.data, cache_dir=base.cache_dir, download=base.download)


def tune(config: Any, trials: int = 20, *, storage: str | None = None, study_name: str | None = None,
         output: str | os.PathLike = "tune", space: dict | None = None, timeout: float | None = None,
         seed: int = 0, enqueue: list[dict] | None = None, progress: bool = False, **overrides: Any) -> TuneResult:
    """Search hyper-parameters with Optuna (TPE + median pruning on per-epoch validation accuracy).

    Args:
        config: base config: a TrainConfig, dict, YAML path, or a DATA spec; ``overrides`` are config fields.
        trials: total number of finished (complete or pruned) trials wanted in the study.
        storage: Optuna storage URL (default: ``sqlite:///<output>/<study>/study.db``).
        study_name: default ``<model>-<data name>``.
        output: parent folder of the study folder.
        space: per-field ranges ``(low, high)`` or choices ``[...]`` replacing the defaults.
        timeout: stop starting new trials after this many seconds.
        enqueue: parameter dicts to try first (e.g. a known-good config).

    Returns:
        A :class:`TuneResult`; ``result.config`` is also written to ``<output>/<study>/best.yaml``.

    Example:
        >>> r = tune({"data": "digits", "epochs": 5}, trials=10)  # doctest: +SKIP
        >>> r.config.lr, r.value                                   # doctest: +SKIP
    """
    import optuna

    base = _base_config(config, overrides)
    fixed = base.model_fields_set - {"data"}
    full = default_space(base)
    user_space = dict(space or {})
    unknown = sorted(set(user_space) - set(TrainConfig.model_fields))
    if unknown:
        raise ConfigError(f"space: unknown field(s) {unknown}")
    search = {k: v for k, v in full.items() if k not in fixed}
    search.update(user_space)
    base_d = base.model_dump(exclude_unset=True)
    name = study_name or f"{base.model}-{Path(str(base.data)).name}".replace("/", "_").replace(":", "_")
    _check_inputs(base)
    out = Path(output) / name
    out.mkdir(parents=True, exist_ok=True)
    storage = storage or f"sqlite:///{(out / 'study.db').resolve()}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=name, storage=storage, load_if_exists=True, direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(2, min(10, trials // 3))),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=max(1, min(5, trials // 4)), n_warmup_steps=2))
    stale = _requeue_stale(study)
    for params in enqueue or []:
        study.enqueue_trial(params, skip_if_exists=True)
    from optuna.trial import TrialState

    done = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))
    todo = max(0, trials - done)
    log(f"study [bold]{name}[/] in {storage}: {done} trial(s) done" + (f", {stale} stale re-queued" if stale else "")
        + f", running {todo} more; searching {', '.join(k for k, v in search.items() if not (isinstance(v, list) and len(v) == 1))}"
        + (f"; fixed by you: {', '.join(sorted(fixed & set(full)))}" if fixed & set(full) else ""))
    if todo:
        study.optimize(_objective(base_d, search, out, progress), n_trials=todo, timeout=timeout, catch=(ConfigError,))
    return _write_outputs(study, base_d, search, out)


def _write_outputs(study, base_d: dict, search: dict, out: Path) -> TuneResult:
    from optuna.trial import TrialState

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    study.trials_dataframe().to_csv(out / "trials.csv", index=False)
    plot_trials(study, out / "trials.png")
    if not complete:
        raise ValueError(f"tune: no trial completed (see {out / 'trials.csv'}); widen the space or add --trials")
    best = study.best_trial
    fixed_choices = {k: v[0] for k, v in search.items() if isinstance(v, list) and len(v) == 1}
    best_d = {**base_d, **fixed_choices, **best.params}
    cfg = make_config(**best_d)  # the YAML below must be a config that `train --config` accepts
    header = (f"# nextclass tune: best of {len(complete)} complete trial(s) in study {study.study_name!r}\n"
              f"# trial {best.number}: val accuracy {best.value:.4f} (run {best.user_attrs.get('run_dir', '?')})\n"
              f"# train it: nextclass train --config {out / 'best.yaml'}\n")
    atomic_write_text(out / "best.yaml", header + yaml.safe_dump(cfg.model_dump(mode="json", include=set(best_d)),
                                                                 sort_keys=False))
    counts = {s.name.lower(): len(study.get_trials(deepcopy=False, states=(s,))) for s in TrialState}
    atomic_write_json(out / "summary.json", {"study": study.study_name, "best_trial": best.number, "best_value": best.value,
                                             "best_params": best.params, "trials": counts,
                                             "best_config": str(out / "best.yaml"), "plot": str(out / "trials.png")})
    log(f"best: trial {best.number}, val accuracy {best.value:.4f} -> {out / 'best.yaml'}")
    return TuneResult(cfg, float(best.value), dict(best.params), out, study)


def trials_table(study, limit: int = 50):
    """A Rich table of the study's trials (best first, then by number)."""
    from rich.table import Table
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    best_n = study.best_trial.number if any(t.state == TrialState.COMPLETE for t in trials) else None
    keys = sorted({k for t in trials for k in t.params})
    t = Table(title=f"study {study.study_name}: {len(trials)} trial(s)")
    for c in ["#", "state", "val acc", "epochs", *keys, "seconds"]:
        t.add_column(c, justify="left" if c in ("state", "recipe", "augment") else "right")
    order = sorted(trials, key=lambda x: (x.number != best_n, x.number))
    for tr in order[:limit]:
        secs = tr.duration.total_seconds() if tr.duration else None
        val = tr.value if tr.value is not None else (list(tr.intermediate_values.values())[-1] if tr.intermediate_values else None)
        t.add_row(f"{tr.number}" + (" *" if tr.number == best_n else ""), tr.state.name.lower(),
                  "" if val is None else f"{val:.4f}", str(len(tr.intermediate_values) or ""),
                  *[_fmt(tr.params.get(k, "")) for k in keys], "" if secs is None else f"{secs:.1f}")
    return t


def plot_trials(study, path: str | os.PathLike) -> Path:
    """PNG: trial values with the best-so-far line (left) and per-epoch validation curves (right)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator
    from optuna.trial import TrialState

    trials = [t for t in study.get_trials(deepcopy=False) if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    fig = Figure(figsize=(11, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax1, ax2 = fig.subplots(1, 2)
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    pruned = [t for t in trials if t.state == TrialState.PRUNED and t.intermediate_values]
    ax1.scatter([t.number for t in done], [t.value for t in done], color="tab:blue", label="complete", zorder=3)
    ax1.scatter([t.number for t in pruned], [list(t.intermediate_values.values())[-1] for t in pruned], marker="x",
                color="tab:gray", label="pruned (last epoch)", zorder=3)
    if done:
        xs, best, ys = sorted(t.number for t in done), -1.0, []
        by_n = {t.number: t.value for t in done}
        for n in xs:
            best = max(best, by_n[n])
            ys.append(best)
        ax1.step(xs, ys, where="post", color="tab:red", label="best so far")
    ax1.set(title="optimisation history", xlabel="trial", ylabel="val accuracy")
    ax1.legend(loc="lower right", fontsize=8)
    for t in trials:
        steps = sorted(t.intermediate_values)
        ax2.plot(steps, [t.intermediate_values[s] for s in steps], linestyle="-" if t.state == TrialState.COMPLETE else "--",
                 color="tab:blue" if t.state == TrialState.COMPLETE else "tab:gray", alpha=0.8, marker=".")
    ax2.set(title="val accuracy per epoch (dashed: pruned)", xlabel="epoch", ylabel="val accuracy")
    for ax in (ax1, ax2):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    return path


class _CallableModule(types.ModuleType):
    """``nextclass.tune(...)`` keeps working after this module is imported.

    Importing ``nextclass.tune`` rebinds the package attribute ``nextclass.tune`` (the public
    function) to this module; making the module callable keeps both spellings valid.
    """

    def __call__(self, *args: Any, **kwargs: Any) -> TuneResult:
        return tune(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
