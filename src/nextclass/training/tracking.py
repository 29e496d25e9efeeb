"""Experiment tracking: ``track: mlflow`` or ``track: tensorboard`` in the config (``--track`` on the CLI).

A tracker is opened by :func:`start_tracker` once the run directory exists (rank 0 only), is fed
one history row per epoch (it is a plain per-epoch callback: ``tracker(row, state)``), and is
closed by :meth:`Tracker.finish` with the final metrics and the run's artifacts, or by
:meth:`Tracker.fail` when training raised.

* **MLflow** goes through :class:`mlflow.tracking.MlflowClient` (no global "active run", so a
  pruned Optuna trial or a crash never leaves the next run nested in a stale one). The store is
  the config's ``tracking_uri`` when set (``--tracking-uri``, which also reads ``$MLFLOW_TRACKING_URI``),
  else a local store in the run:
  ``sqlite:///<run>/mlflow.db`` with artifacts in ``<run>/mlartifacts`` (browse it with
  ``mlflow ui --backend-store-uri sqlite:///<run>/mlflow.db``). NOTE: not ``<run>/mlruns``: MLflow 3
  put the plain-file store in maintenance mode and refuses it unless ``MLFLOW_ALLOW_FILE_STORE=true``
  (then ``--tracking-uri file:///...`` works too). Experiment:
  ``nextclass``; run name: the run directory's name. Params are the
  resolved config; metrics per epoch; artifacts: config, history, metrics, predictions, report and
  the bundle (under ``model/``).
* **TensorBoard** writes event files to ``<run>/tensorboard`` with
  :class:`torch.utils.tensorboard.SummaryWriter`: scalars per epoch, the config as text, and the
  final metrics as hparams (``tensorboard --logdir runs``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["Tracker", "MlflowTracker", "TensorBoardTracker", "start_tracker", "flat_params", "EPOCH_METRICS"]

EPOCH_METRICS = ("train_loss", "train_acc", "val_loss", "val_acc", "lr", "images_per_second", "epoch_seconds")
ARTIFACTS = ("config", "split", "skipped", "history", "metrics", "report")  # RunDir's files, logged to MLflow


def flat_params(cfg_dict: dict) -> dict[str, str]:
    """Config values as MLflow/TensorBoard params (strings; ``None`` -> ``"None"``)."""
    return {k: (",".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)) for k, v in cfg_dict.items()}


def _epoch_values(row: dict) -> dict[str, float]:
    out = {}
    for k in EPOCH_METRICS:
        try:
            v = float(row[k])
        except (KeyError, TypeError, ValueError):
            continue
        if v == v:  # drop NaN (no val split)
            out[k] = v
    return out


def _final_values(metrics: dict) -> dict[str, float]:
    out = {}
    for split in ("val", "test"):
        b = metrics.get(split)
        if isinstance(b, dict):
            out[f"{split}_accuracy"] = float(b["accuracy"])
            out[f"{split}_top5"] = float(b["top5"])
            out[f"{split}_macro_f1"] = float(b["macro"]["f1"])
    return out


class Tracker:
    """Base tracker: a per-epoch callback plus ``finish``/``fail``."""

    def __call__(self, row: dict, state: dict) -> None:  # per-epoch hook
        self.log_epoch(int(row["epoch"]), _epoch_values(row))

    def log_epoch(self, epoch: int, values: dict[str, float]) -> None:
        raise NotImplementedError

    def finish(self, run_dir: Path) -> None:
        raise NotImplementedError

    def fail(self, reason: str = "") -> None:
        pass


class MlflowTracker(Tracker):
    """Log to MLflow through an explicit client and run id."""

    def __init__(self, run_dir: Path, params: dict, tracking_uri: str | None = None, experiment: str | None = None):
        from mlflow.tracking import MlflowClient

        local = run_dir.resolve()
        self.uri = tracking_uri or f"sqlite:///{local / 'mlflow.db'}"
        self.client = MlflowClient(tracking_uri=self.uri)
        name = experiment or "nextclass"
        exp = self.client.get_experiment_by_name(name)
        if exp is not None:
            exp_id = exp.experiment_id
        elif tracking_uri is None:
            # our own store: keep its artifacts in the run too (MLflow's default is ./mlartifacts under the cwd)
            exp_id = self.client.create_experiment(name, artifact_location=(local / "mlartifacts").as_uri())
        else:
            exp_id = self.client.create_experiment(name)
        self.run_id = self.client.create_run(exp_id, run_name=run_dir.name,
                                             tags={"nextclass.run_dir": str(run_dir.resolve())}).info.run_id
        self._log_params(params)

    def _log_params(self, params: dict) -> None:
        from mlflow.entities import Param

        items = [Param(k, v[:6000]) for k, v in flat_params(params).items()]
        for i in range(0, len(items), 100):  # MLflow's per-batch param limit
            self.client.log_batch(self.run_id, params=items[i:i + 100])

    def log_epoch(self, epoch: int, values: dict[str, float]) -> None:
        import time

        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, ts, epoch) for k, v in values.items()])

    def finish(self, run_dir: Path) -> None:
        from nextclass.rundir import RunDir

        run = RunDir(run_dir)
        for k, v in _final_values(run.read_metrics()).items():
            self.client.log_metric(self.run_id, k, v)
        files = [getattr(run, name) for name in ARTIFACTS] + [run.predictions("test"), run.predictions("val")]
        for f in files:
            if f.is_file():
                self.client.log_artifact(self.run_id, str(f))
        if run.bundle.is_dir():
            self.client.log_artifacts(self.run_id, str(run.bundle), artifact_path="model")
        self.client.set_terminated(self.run_id, "FINISHED")

    def fail(self, reason: str = "") -> None:
        if reason:
            self.client.set_tag(self.run_id, "nextclass.stopped", reason[:5000])
        self.client.set_terminated(self.run_id, "KILLED" if "prun" in reason.lower() else "FAILED")


class TensorBoardTracker(Tracker):
    """Write TensorBoard event files to ``<run>/tensorboard``."""

    def __init__(self, run_dir: Path, params: dict):
        from torch.utils.tensorboard import SummaryWriter

        self.params = flat_params(params)
        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
        table = "\n".join(f"| {k} | {v} |" for k, v in self.params.items())
        self.writer.add_text("config", "| field | value |\n|---|---|\n" + table, 0)

    def log_epoch(self, epoch: int, values: dict[str, float]) -> None:
        for k, v in values.items():
            group = "train" if k.startswith("train") else "val" if k.startswith("val") else "speed"
            self.writer.add_scalar(f"{group}/{k}", v, epoch)
        self.writer.flush()

    def finish(self, run_dir: Path) -> None:
        from nextclass.rundir import RunDir

        final = _final_values(RunDir(run_dir).read_metrics())
        if final:
            self.writer.add_hparams(self.params, final, run_name=".")
        self.writer.close()

    def fail(self, reason: str = "") -> None:
        self.writer.close()


def start_tracker(ctx: Any) -> Tracker | None:
    """Open the tracker that ``ctx.cfg.track`` asks for (``None`` for ``none`` or on ranks other than 0).

    Example:
        >>> tracker = start_tracker(ctx)          # doctest: +SKIP
        >>> tracker({"epoch": 1, "val_acc": 0.9}, {})  # doctest: +SKIP
        >>> tracker.finish(ctx.run_dir)           # doctest: +SKIP
    """
    from nextclass.dist import is_main, world_size
    from nextclass.utils import log

    kind = ctx.cfg.track
    if kind == "none" or not is_main():
        return None
    params = ctx.cfg.model_dump(mode="json")
    params["world_size"] = world_size()
    if kind == "mlflow":
        t: Tracker = MlflowTracker(ctx.run_dir, params, ctx.cfg.tracking_uri)
        log(f"tracking: MLflow run {t.run_id} in {t.uri}")
        return t
    if kind == "tensorboard":
        t = TensorBoardTracker(ctx.run_dir, params)
        log(f"tracking: TensorBoard events in {ctx.run_dir / 'tensorboard'}")
        return t
    raise ValueError(f"track: {kind!r} is not supported; choose none, mlflow or tensorboard")
