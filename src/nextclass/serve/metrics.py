"""Prometheus text exposition (format 0.0.4), hand-written: ``prometheus_client`` is not a dependency.

Counters and histograms are updated from the event loop only, so they need no locks.
"""

from __future__ import annotations

import bisect
import time
from collections import defaultdict

__all__ = ["Metrics", "Histogram"]

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


def _labels(d: dict) -> str:
    if not d:
        return ""
    esc = (str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") for v in d.values())
    return "{" + ",".join(f'{k}="{v}"' for k, v in zip(d, esc)) + "}"


class Histogram:
    """Cumulative-bucket histogram (Prometheus semantics: ``le`` buckets, ``_sum``, ``_count``)."""

    def __init__(self, buckets: tuple[float, ...]):
        self.buckets = tuple(buckets)
        self.counts = [0] * (len(self.buckets) + 1)
        self.sum = 0.0

    def observe(self, v: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, v)] += 1
        self.sum += v

    def lines(self, name: str, labels: dict) -> list[str]:
        out, acc = [], 0
        for b, c in zip(self.buckets, self.counts):
            acc += c
            out.append(f"{name}_bucket{_labels({**labels, 'le': f'{b:g}'})} {acc}")
        acc += self.counts[-1]
        out += [f"{name}_bucket{_labels({**labels, 'le': '+Inf'})} {acc}",
                f"{name}_sum{_labels(labels)} {self.sum:.6f}", f"{name}_count{_labels(labels)} {acc}"]
        return out


class Metrics:
    """The server's metrics: requests (by route and status), latencies, images, batch sizes.

    Example:
        >>> m = Metrics(); m.request("/v1/predict", "POST", 200, 0.012); "nextclass_requests_total" in m.render()
        True
    """

    def __init__(self):
        self.started = time.time()
        self.requests: dict[tuple, int] = defaultdict(int)
        self.latency: dict[str, Histogram] = {}
        self.batch_size = Histogram(BATCH_BUCKETS)
        self.batch_seconds = Histogram(LATENCY_BUCKETS)
        self.images: dict[str, int] = defaultdict(int)
        self.queue_depth = 0

    def request(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests[(route, method, str(status))] += 1
        self.latency.setdefault(route, Histogram(LATENCY_BUCKETS)).observe(seconds)

    def batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.batch_seconds.observe(seconds)

    def render(self) -> str:
        L = ["# HELP nextclass_requests_total HTTP requests by route, method and status.",
             "# TYPE nextclass_requests_total counter"]
        L += [f"nextclass_requests_total{_labels({'route': r, 'method': m, 'status': s})} {n}"
              for (r, m, s), n in sorted(self.requests.items())]
        L += ["# HELP nextclass_request_duration_seconds Request latency (server side) by route.",
              "# TYPE nextclass_request_duration_seconds histogram"]
        for r, h in sorted(self.latency.items()):
            L += h.lines("nextclass_request_duration_seconds", {"route": r})
        L += ["# HELP nextclass_images_total Images by outcome (predicted, rejected).",
              "# TYPE nextclass_images_total counter"]
        L += [f"nextclass_images_total{_labels({'outcome': k})} {v}" for k, v in sorted(self.images.items())]
        L += ["# HELP nextclass_batch_size Images per model call (micro-batches).", "# TYPE nextclass_batch_size histogram"]
        L += self.batch_size.lines("nextclass_batch_size", {})
        L += ["# HELP nextclass_batch_duration_seconds Model time per micro-batch.",
              "# TYPE nextclass_batch_duration_seconds histogram"]
        L += self.batch_seconds.lines("nextclass_batch_duration_seconds", {})
        L += ["# HELP nextclass_queue_depth Requests waiting for the model.", "# TYPE nextclass_queue_depth gauge",
              f"nextclass_queue_depth {self.queue_depth}",
              "# HELP nextclass_uptime_seconds Seconds since the server started.", "# TYPE nextclass_uptime_seconds gauge",
              f"nextclass_uptime_seconds {time.time() - self.started:.3f}"]
        return "\n".join(L) + "\n"
