"""Run preparation: the run directory, the data, its splits, decoding once, and the resolved config.

:func:`prepare` turns a :class:`~nextclass.config.TrainConfig` into the :class:`Context` that the
training phases and the finish step share. The automatic defaults themselves are chosen in
:mod:`nextclass.training.defaults`; this module logs them and saves the resolved ``config.yaml``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from nextclass.config import AUTO, TrainConfig, save_config
from nextclass.data.quick_audit import audit_decoded
from nextclass.data.cache import DecodedImages, decode_all
from nextclass.data.corrections import correct_source
from nextclass.data.multilabel import set_ids
from nextclass.data.probe import DataProbe, probe_data
from nextclass.data.samples import DataSource
from nextclass.data.sources import load_source
from nextclass.data.splits import MAX_CARVED_VAL, assign_splits, read_split_csv, split_rows, write_split_csv
from nextclass.data.transforms import Preprocess
from nextclass.dist import (
    barrier,
    broadcast_object,
    check_device,
    device_for_rank,
    init_from_env,
    is_main,
    local_rank,
    world_size,
)
from nextclass.training.context import Context
from nextclass.training.defaults import amp_dtype_for, resolve, run_name, settle_hflip
from nextclass.rundir import RunDir
from nextclass.utils import atomic_write_json, atomic_write_text, configure_threads, default_cache_dir, log

__all__ = ["prepare", "new_run_dir", "split_rows", "data_hash", "check_readable", "discard_if_unstarted"]


def new_run_dir(output: str, name: str) -> Path:
    """``output/name``, or ``output/name-N`` with the first free N; created."""
    base = Path(output) / name
    cand, n = base, 1
    while cand.exists():
        n += 1
        cand = base.with_name(f"{base.name}-{n}")
    cand.mkdir(parents=True)
    return cand


def _write_skipped(path: Path, source: DataSource, images: DecodedImages) -> None:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["path", "split", "reason"])
    for pos, reason in sorted(images.errors.items()):
        s = source.samples[pos]
        w.writerow([s.path, s.split, reason])
    atomic_write_text(path, buf.getvalue())


def data_hash(images: DecodedImages, rows: np.ndarray, labels: np.ndarray) -> str:
    """sha256 of the training pixels and labels: the bundle records what it was trained on."""
    h = hashlib.sha256()
    for r in rows:
        h.update(memoryview(np.ascontiguousarray(images.array[r])))
    h.update(labels.astype(np.int64).tobytes())
    return "sha256:" + h.hexdigest()


def _open_run(cfg: TrainConfig | None, resume: str | os.PathLike | None, source: DataSource,
              probe: DataProbe | None) -> Path:
    """The run directory: the one being resumed, or a new ``output/<name>`` (named by rank 0 under DDP)."""
    if resume is not None:
        return Path(resume)
    name = run_name(cfg, source, probe)
    return Path(broadcast_object(str(new_run_dir(cfg.output, name)) if is_main() else None))


def _splits(source: DataSource, run_dir: Path, cfg: TrainConfig) -> dict | None:
    """The run's split.csv when it exists (resume), else a seeded stratified split, written by rank 0.

    ``--corrections`` are applied after the split is drawn, so a corrected run tests on the images a run
    without them tests on (less the ones it drops): ``nextclass compare`` pairs them. Returns what they changed.
    """
    run = RunDir(run_dir)
    if run.split.exists():
        applied = _correct(source, cfg, run)
        read_split_csv(run.split, source)
        return applied
    default_split = "split" not in cfg.model_fields_set  # the user left it: a large val is capped
    assign_splits(source, cfg.split, cfg.seed, val_cap=MAX_CARVED_VAL if default_split else None)
    applied = _correct(source, cfg, run)
    if is_main():
        write_split_csv(run.split, source)
    return applied


def _correct(source: DataSource, cfg: TrainConfig, run: RunDir) -> dict | None:
    """Apply ``cfg.corrections`` to ``source`` (a resumed run: the rows it applied when it started) and record
    what changed in ``corrections.applied.json``."""
    if not cfg.corrections:
        return None
    before = run.read_corrections_applied()
    applied = correct_source(source, cfg.corrections, cache_dir=cfg.cache_dir,
                             upto=before["n_rows"] if before else None)
    record = applied.to_dict()
    if is_main() and before is None:
        atomic_write_json(run.corrections_applied, {**record, "left_out": applied.left_out})
    return record


def _note_in_audit(run: RunDir, corrections: dict) -> None:
    rep = run.read_audit()
    if rep:
        rep["corrections"] = corrections
        run.write_audit(rep)


def _decode(source: DataSource, pp: Preprocess, cfg: TrainConfig, run_dir: Path, progress: bool) -> DecodedImages:
    """Decode every image once into the uint8 cache (one process per machine under DDP), then audit."""
    if local_rank() != 0:
        barrier()  # DDP: one process per machine decodes; the others then read its cache
    images = decode_all(source, list(range(len(source.samples))), pp, cache_dir=cfg.cache_dir,
                        progress=progress and local_rank() == 0)
    if local_rank() == 0:
        barrier()
    if is_main():
        _write_skipped(RunDir(run_dir).skipped, source, images)
        # the quick duplicate/leak audit: logs, never raises; kept in the cache for the next run on this data
        audit_decoded(source, images, RunDir(run_dir).audit, cache_dir=cfg.cache_dir or default_cache_dir())
    return images


def _log_data(source: DataSource, images: DecodedImages, rows: dict, pp: Preprocess, run_dir: Path) -> None:
    counts = ", ".join(f"{sp} {len(r)}" for sp, r in rows.items())
    kind = "labels (multi-label)" if source.multilabel else "classes"
    log(f"[bold]{source.name}[/]: {len(source.classes)} {kind}, {len(source.samples)} images ({counts}); "
        f"skipped {len(images.errors)}" + (f" (see {run_dir / 'skipped.csv'})" if images.errors else "")
        + f"; cache {'hit' if images.hit else 'built'} at {pp.size}px x{pp.channels}")


def prepare(cfg: TrainConfig | None = None, *, resume: str | os.PathLike | None = None, progress: bool = True) -> Context:
    """Create (or reopen) the run directory, resolve the config, build the model and get the data ready.

    The device, the data and the batch size are checked before any work; a new run that fails before its
    first epoch leaves no directory behind (:func:`discard_if_unstarted`), so the next run gets the same name.

    Example:
        >>> ctx = prepare(make_config(data="digits", epochs=1))  # doctest: +SKIP
        >>> ctx.run_dir, ctx.cfg.img_size                        # doctest: +SKIP
        (PosixPath('runs/simple_cnn-digits'), 16)
    """
    if resume is not None:
        cfg = RunDir(resume).read_config()  # raises NotARunError (a FileNotFoundError) for a folder that is not a run
    assert cfg is not None
    if cfg.corrections and resume is None:  # the saved config names the file wherever evaluate runs from
        cfg = cfg.model_copy(update={"corrections": str(Path(cfg.corrections).expanduser().resolve())})
    check_device(cfg.device)  # a one-line error before anything is made, not a traceback at the first tensor
    init_from_env(cfg.device)  # under torchrun / --nproc: join the process group (gloo on CPU, NCCL on GPU)
    configure_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    source = load_source(cfg.data, cache_dir=cfg.cache_dir, download=cfg.download, task=cfg.task)
    check_readable(source, cfg.data)
    probe = None if resume is not None else probe_data(source)  # the one data probe: run name and defaults
    run_dir = _open_run(cfg, resume, source, probe)
    with discard_if_unstarted(run_dir, new=resume is None):
        return _prepare_in(cfg, source, run_dir, resume is not None, progress, probe)


def _prepare_in(cfg: TrainConfig, source: DataSource, run_dir: Path, resumed: bool, progress: bool,
                probe: DataProbe | None = None) -> Context:
    """:func:`prepare` once the run directory exists: splits, defaults, decoding, the device."""
    corrections = _splits(source, run_dir, cfg)
    n_train = sum(1 for s in source.samples if s.split == "train")
    _check_batch(cfg, n_train)
    res = resolve(cfg, source, n_train, probe)  # on resume: nothing changes
    auto_recipe, auto_img_size = cfg.recipe == AUTO, cfg.img_size == AUTO
    cfg = res.cfg
    if not resumed and is_main():
        save_config(cfg, RunDir(run_dir).config)
        for n in res.notes:
            log(f"[dim]auto[/] {n}")
    configure_threads(cfg.threads)
    images = _decode(source, res.pp, cfg, run_dir, progress)
    if corrections and is_main():  # the run's audit says which labels it trained on
        _note_in_audit(RunDir(run_dir), corrections)
    rows, labels = split_rows(source, images)
    if len(rows["train"]) == 0:
        raise ValueError(f"{cfg.data}: no usable training images after decoding ({len(images.errors)} skipped)")
    cfg, note = settle_hflip(cfg, images.array, rows["train"], set_ids(labels["train"]), cfg.seed, images.key,
                             cfg.cache_dir or default_cache_dir())
    if note and is_main():
        log(f"[dim]auto[/] {note}")
        save_config(cfg, RunDir(run_dir).config)
    dev = device_for_rank(torch.device(cfg.device))  # DDP: cuda -> cuda:LOCAL_RANK
    amp_dtype = amp_dtype_for(cfg.amp, dev)
    if amp_dtype is not None and dev.type != "cuda":
        log("[yellow]WARNING[/]: amp on CPU - bf16 autocast measured 15-40x slower than fp32 on CPUs without AMX/AVX512-BF16")
    if is_main():  # DDP: one log line, not one per rank
        _log_data(source, images, rows, res.pp, run_dir)
    return Context(cfg, run_dir, source, res.pp, images, rows, labels, dev, amp_dtype,
                   data_hash(images, rows["train"], labels["train"]), res.model, resumed=resumed,
                   auto_recipe=auto_recipe, auto_img_size=auto_img_size, corrections=corrections)


def _check_batch(cfg: TrainConfig, n_train: int) -> None:
    """A given batch size larger than the training split is a mistake (and would scale the automatic lr up)."""
    if cfg.batch_size == "auto" or n_train == 0:
        return
    world = max(1, world_size())
    if cfg.batch_size * world > n_train:
        per = f" ({cfg.batch_size} per process x {world})" if world > 1 else ""
        raise ValueError(f"batch_size: {cfg.batch_size * world}{per} is more than the {n_train} training images; "
                         f"give at most {max(1, n_train // world)} (or leave --batch-size out: it is chosen for the data)")


def check_readable(source: DataSource, data: str, n: int = 16) -> None:
    """Fail in a second, before any set-up, when none of ``n`` evenly spaced files opens as an image.

    A folder of text files named ``.jpg`` used to cost the whole set-up (defaults guessed from no image sizes)
    before decoding found nothing usable. Some unreadable files among readable ones are fine: they are skipped
    and listed in ``skipped.csv``.
    """
    from nextclass.data.decode import DecodeError, open_image

    if source.array is not None or not source.samples:
        return
    probe = source.samples[:: max(1, len(source.samples) // n)][:n]
    reasons = []
    for s in probe:
        try:
            with open_image(s.path, 3):
                return
        except DecodeError as e:
            reasons.append(f"{Path(s.path).name}: {e}")
    raise ValueError(f"{source.name}: none of the {len(probe)} files probed (of {len(source.samples)}) is a readable "
                     f"image (first: {reasons[0]}); `nextclass audit {data}` lists every file")


@contextmanager
def discard_if_unstarted(run_dir: Path, *, new: bool):
    """Remove a new run's directory when the block fails before the first epoch was written (``history.csv``).

    Nothing is lost: such a directory holds only what the next attempt writes again (config, split, audit),
    and leaving it would make the next run with the same ``--name`` silently ``NAME-2``. A resumed run, an
    interrupted one (Ctrl-C: the user may resume it) and one with a finished epoch are always kept.
    """
    try:
        yield
    except Exception:
        run = RunDir(run_dir)
        started = run.history.exists() or run.last_checkpoint.exists() or run.best_checkpoint.exists()
        if new and is_main() and not started:
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
