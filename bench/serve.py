"""Benchmark (issue 5): the HTTP server against the raw ONNX Runtime session, ONNX vs PyTorch, int8 vs fp32.

All figures come from one run on one machine and are compared as ratios:

1. ``raw``: the bundle's ONNX Runtime session fed already-preprocessed tensors of the workload images
   (batch 32 and batch 1), and the same for eager PyTorch (``torch``).
2. ``server``: ``nextclass serve BUNDLE --backend onnx`` in its own process; a bounded async client
   (httpx, ``--concurrency`` requests in flight) sends the same photos as JPEG files, one image per
   request and then ``--per-request`` images per request. Reported: images/s, p50/p99 latency,
   mean micro-batch size (from ``/metrics``), and the ratio to the raw batch-32 throughput measured
   right before and right after that load test (other processes share this machine), and to
   ``raw_with_decode``: the same session fed from the JPEG bytes in-process (decode + the bundle's
   preprocessing on one thread, then batch 32), i.e. the server's work minus HTTP. ``light``: 4
   clients, for latency without queueing. ``client_cpu_cores``: CPU the load generator itself used.
   The server's number includes JPEG decoding, resizing and normalising; the raw one does not. The
   load generator runs on the same cores as the server.
3. ``int8_speed``: the quantised model (calibrated on the workload photos) vs fp32, batch 32.
4. ``int8_accuracy``: resnet18 trained briefly from scratch on a Fashion-MNIST subset (28 px PNG
   folder, 32 px input), exported with ``nextclass.export(run, int8=True)``: validation accuracy
   of int8 vs fp32, agreement, size and speed, as the export reports them; and global magnitude
   pruning (30 %, 50 %, no fine-tune) of the same model: accuracy, compressed size, speed.

    flock /tmp/nextclass-bench.lock .venv/bin/python bench/serve.py [--model resnet18 --size 224]
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

FMNIST = Path("/usr/share/datasets/fashion-mnist")
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "colorwheel", "hubble_deep_field", "camera")


def photos_jpeg() -> list[tuple[str, bytes]]:
    """Real photos shipped with scikit-image, as JPEG files (what a client would upload)."""
    import skimage.data
    from PIL import Image

    out = []
    for name in PHOTOS:
        a = getattr(skimage.data, name)()
        img = Image.fromarray(a).convert("RGB")
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=90)
        out.append((f"{name}.jpg", buf.getvalue()))
    return out


def make_bundle(folder: Path, model_name: str, size: int) -> Path:
    """A random-init timm model as a nextclass bundle (compute is what matters for speed)."""
    import torch

    from nextclass.bundle import save_bundle
    from nextclass.data.transforms import Preprocess
    from nextclass.models.factory import create

    torch.manual_seed(0)
    model = create(model_name, num_classes=10, in_chans=3)
    pp = Preprocess(size=size, crop=size, channels=3, interpolation="bilinear",
                    mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    return save_bundle(folder, model.eval(), arch={"name": model_name, "kwargs": {"num_classes": 10, "in_chans": 3}},
                       classes=[f"class{i}" for i in range(10)], preprocess=pp)


def timed(fn, reps: int = 5, warm: int = 1) -> float:
    for _ in range(warm):
        fn()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


def raw_speeds(bundle: Path, x: np.ndarray, rounds: int = 3) -> dict:
    """ONNX Runtime vs eager PyTorch on the same tensors, interleaved (A B A B ...) so that load from
    other processes hits both alike; medians over the rounds."""
    import torch

    from nextclass.bundle import load_model
    from nextclass.deploy.onnx import session

    sess = session(bundle / "model.onnx")
    name = sess.get_inputs()[0].name
    model, _ = load_model(bundle)
    xt = torch.from_numpy(x)
    out = {}
    with torch.no_grad():
        for b in (32, 1):
            reps = 4 if b == 32 else 20
            ort_t, pt_t = [], []
            for _ in range(rounds):
                ort_t.append(timed(lambda: sess.run(None, {name: x[:b]}), reps=reps))
                pt_t.append(timed(lambda: model(xt[:b]), reps=reps))
            t_ort, t_pt = float(np.median(ort_t)), float(np.median(pt_t))
            out[f"onnx_b{b}_img_s"] = round(b / t_ort, 1)
            out[f"torch_b{b}_img_s"] = round(b / t_pt, 1)
            out[f"onnx_vs_torch_b{b}"] = round(t_pt / t_ort, 2)
    return out


def raw_with_decode(bundle: Path, photos, n: int = 64) -> dict:
    """The same session fed from the JPEG bytes: decode + the bundle's preprocessing (one thread) + batch 32.

    This is the work the server does per image besides HTTP, done in-process without a server.
    """
    from nextclass.deploy.onnx import session
    from nextclass.deploy.loading import load

    pred = load(bundle)
    sess = session(bundle / "model.onnx")
    name = sess.get_inputs()[0].name
    data = [photos[i % len(photos)][1] for i in range(n)]
    per_img = [timed(lambda b=b: pred.to_tensor(b), reps=3) for _, b in photos]

    def run():
        for i in range(0, n, 32):
            sess.run(None, {name: np.stack([pred.to_tensor(b).numpy() for b in data[i:i + 32]])})

    return {"img_s": round(n / timed(run, reps=2), 1), "preprocess_ms_per_photo": {
        p[0]: round(1000 * t, 1) for p, t in zip(photos, per_img)}, "preprocess_ms_mean": round(1000 * float(np.mean(per_img)), 1)}


def raw_onnx_b32(bundle: Path, x: np.ndarray) -> float:
    """Raw session images/s at batch 32 (measured right before/after each load test)."""
    from nextclass.deploy.onnx import session
    from nextclass.deploy.quantize import throughput

    return throughput(session(bundle / "model.onnx"), x, batch=32, seconds=3)


def int8_speed(bundle: Path, x: np.ndarray) -> dict:
    from nextclass.deploy.onnx import session
    from nextclass.deploy.quantize import quantize_int8, throughput

    q = quantize_int8(bundle / "model.onnx", bundle / "model.int8.onnx", x[:32])
    s32, s8 = throughput(session(bundle / "model.onnx"), x, seconds=3), throughput(session(q), x, seconds=3)
    return {"fp32_b32_img_s": round(s32, 1), "int8_b32_img_s": round(s8, 1), "speedup": round(s8 / s32, 2),
            "fp32_MB": round((bundle / "model.onnx").stat().st_size / 1e6, 2), "int8_MB": round(q.stat().st_size / 1e6, 2)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def load_test(url: str, photos, n_requests: int, concurrency: int, per_request: int) -> dict:
    import httpx

    sem = asyncio.Semaphore(concurrency)
    lat: list[float] = []
    codes: list[int] = []
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=httpx.Limits(max_connections=concurrency)) as c:
        async def one(i: int):
            files = [("files", photos[(i * per_request + j) % len(photos)]) for j in range(per_request)]
            async with sem:
                t0 = time.perf_counter()
                r = await c.post("/v1/predict", files=[(k, (n, b, "image/jpeg")) for k, (n, b) in files])
                lat.append(time.perf_counter() - t0)
                codes.append(r.status_code)

        t0, cpu0 = time.perf_counter(), time.process_time()
        await asyncio.gather(*(one(i) for i in range(n_requests)))
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    ok = sum(1 for c in codes if c == 200)
    return {"requests": n_requests, "ok": ok, "images_per_request": per_request, "concurrency": concurrency,
            "img_s": round(ok * per_request / wall, 1), "p50_ms": round(1000 * float(np.percentile(lat, 50)), 1),
            "p99_ms": round(1000 * float(np.percentile(lat, 99)), 1), "seconds": round(wall, 2),
            "client_cpu_cores": round(cpu / wall, 2)}


def batch_stats(url: str) -> tuple[float, float]:
    import httpx

    t = httpx.get(f"{url}/metrics").text
    s = float(re.search(r"^nextclass_batch_size_sum (\S+)$", t, re.M).group(1))
    c = float(re.search(r"^nextclass_batch_size_count (\S+)$", t, re.M).group(1))
    return s, c


def server_bench(bundle: Path, photos, x: np.ndarray, args) -> dict:
    import httpx

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "nextclass", "serve", str(bundle), "--backend", "onnx", "--port",
                             str(port), "--log-level", "warning", "--max-batch", "32"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 180
        while time.time() < deadline:
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        else:
            raise RuntimeError("server did not start: " + (proc.stderr.read() if proc.poll() is not None else ""))
        asyncio.run(load_test(url, photos, 32, 8, 1))  # warm-up
        out = {}
        modes = (("single", 1, args.concurrency), ("multi", args.per_request, args.concurrency), ("light", 1, 4))
        for key, per, conc in modes:
            raw0 = raw_onnx_b32(bundle, x)
            s0, c0 = batch_stats(url)
            n = (args.requests if conc > 4 else args.requests // 2) if per == 1 else max(8, args.requests // per)
            out[key] = asyncio.run(load_test(url, photos, n, conc, per))
            s1, c1 = batch_stats(url)
            raw1 = raw_onnx_b32(bundle, x)
            out[key]["mean_model_batch"] = round((s1 - s0) / max(c1 - c0, 1), 1)
            # the baseline is the raw session measured just before and just after this load test
            out[key]["raw_onnx_b32_img_s"] = [round(raw0, 1), round(raw1, 1)]
            out[key]["vs_raw_onnx_b32"] = round(out[key]["img_s"] / ((raw0 + raw1) / 2), 3)
        sequential = asyncio.run(load_test(url, photos, 30, 1, 1))
        out["sequential_p50_ms"] = sequential["p50_ms"]
        return out
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def fmnist_folder(root: Path, per_class: int) -> Path:
    """A class-folder tree of 28 px PNGs from the Fashion-MNIST training IDX file."""
    from PIL import Image

    with gzip.open(FMNIST / "train-images-idx3-ubyte.gz") as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(FMNIST / "train-labels-idx1-ubyte.gz") as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8)
    names = ["tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"]
    for k, n in enumerate(names):
        d = root / n
        d.mkdir(parents=True, exist_ok=True)
        for i, j in enumerate(np.flatnonzero(y == k)[:per_class]):
            Image.fromarray(x[j], "L").save(d / f"{i:05d}.png")
    return root


def int8_accuracy(work: Path, args) -> dict:
    import nextclass

    data = fmnist_folder(work / "fmnist", args.per_class)
    t0 = time.time()
    run = nextclass.train(data=str(data), model=args.model, img_size=32, in_chans=1, epochs=args.epochs,
                          output=str(work / "runs"), name="fmnist", report=False, progress=False,
                          cache_dir=str(work / "cache"))
    train_s = time.time() - t0
    info = nextclass.export(run, int8=True, parity_images=2000, calib_images=256)
    q = info["int8"]
    return {"model": f"{args.model}@32px, {args.epochs} epochs on {10 * args.per_class} Fashion-MNIST images "
                     f"({train_s:.0f} s)", "exporter": info["exporter"], "parity": info["parity"],
            **{k: q[k] for k in ("images", "accuracy_fp32", "accuracy", "accuracy_delta", "top1_agreement",
                                 "fp32_bytes", "bytes", "size_ratio", "fp32_img_per_s", "int8_img_per_s", "speedup")},
            "prune_no_finetune": prune_check(Path(run))}


def prune_check(run: Path, amounts=(0.3, 0.5)) -> dict:
    """Global L1 magnitude pruning (no fine-tune) of conv/linear weights: val accuracy, gzip size, speed.

    Dense kernels (PyTorch, ONNX Runtime on CPU) do not skip zeros, so the honest expectation is
    no speed-up and a smaller *compressed* file only.
    """
    import copy
    import zlib

    import torch
    from torch import nn
    from torch.nn.utils import prune

    from nextclass.bundle import load_model
    from nextclass.data.transforms import Preprocess
    from nextclass.deploy.samples import split_images

    model, meta = load_model(run)
    val = split_images(run, Preprocess.from_dict(meta["preprocess"]), "val", limit=2000)
    x = torch.from_numpy(val.x)

    def measure(m) -> dict:
        with torch.no_grad():
            acc = float((torch.cat([m(x[i:i + 256]) for i in range(0, len(x), 256)]).argmax(1).numpy() == val.labels).mean())
            t = timed(lambda: m(x[:32]), reps=10)
        raw = b"".join(v.numpy().tobytes() for v in m.state_dict().values() if v.dtype == torch.float32)
        return {"val_accuracy": round(acc, 4), "gzip_MB": round(len(zlib.compress(raw, 6)) / 1e6, 2),
                "torch_b32_img_s": round(32 / t, 1)}

    out = {"dense": measure(model)}
    for a in amounts:
        m = copy.deepcopy(model)
        params = [(mod, "weight") for mod in m.modules() if isinstance(mod, (nn.Conv2d, nn.Linear))]
        prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=a)
        for mod, name in params:
            prune.remove(mod, name)
        out[f"pruned_{int(a * 100)}pct"] = measure(m.eval())
    out["dense_again"] = measure(model)  # the spread between the two dense rows is the timing noise
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--size", type=int, default=224, help="serving input size (px)")
    ap.add_argument("--requests", type=int, default=240)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--per-request", type=int, default=8)
    ap.add_argument("--per-class", type=int, default=300, help="Fashion-MNIST images per class for the int8 accuracy run")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--skip-accuracy", action="store_true")
    ap.add_argument("--work", default=None)
    args = ap.parse_args()
    os.environ.setdefault("NEXTCLASS_CACHE", tempfile.mkdtemp(prefix="nc-bench-cache-"))
    work = Path(args.work or tempfile.mkdtemp(prefix="nc-bench-serve-"))

    import nextclass
    from nextclass.deploy.loading import load

    bundle = make_bundle(work / "bundle", args.model, args.size)
    t0 = time.time()
    exp = nextclass.export(bundle)
    photos = photos_jpeg()
    pred = load(bundle)
    x = np.stack([pred.to_tensor(b).numpy() for _, b in photos])
    x = np.concatenate([x] * (64 // len(x) + 1))[:64].astype(np.float32)
    res = {"machine": {"cpus": os.cpu_count(), "load_avg_start": os.getloadavg()},
           "workload": {"model": args.model, "input_px": args.size, "photos": [n for n, _ in photos],
                        "exporter": exp["exporter"], "export_s": round(time.time() - t0, 1)}}
    res["raw"] = raw_speeds(bundle, x)
    res["raw_with_decode"] = raw_with_decode(bundle, photos)
    res["server"] = server_bench(bundle, photos, x, args)
    for k in ("single", "multi", "light"):
        res["server"][k]["vs_raw_with_decode"] = round(res["server"][k]["img_s"] / res["raw_with_decode"]["img_s"], 3)
    res["int8_speed"] = int8_speed(bundle, x)
    if not args.skip_accuracy:
        res["int8_accuracy"] = int8_accuracy(work, args)
    res["machine"]["load_avg_end"] = os.getloadavg()
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
