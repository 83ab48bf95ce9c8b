"""The demo's speed as a visitor meets it, through its API: warm `/recommend`, `/compare`, concurrency.

    EAGER_DATA_ROOT=../shared/data python scripts/bench_demo.py [--dataset beauty] [--out FILE.json]

Starts the app in this process on the shipped checkpoints (as `./run demo` serves them), waits for
the start-up warm-up, then through gradio_client: `/recommend` for real test users' last 20 items
one at a time (p50, p95), `/compare` of every shipped variant, and 20 clients at once. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import app
from eager.data.split import eval_cases
from eager.demo.service import DemoConfig, DemoService
from eager.serve.bench import machine
from eager.utils import timestamp


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cpu_flags() -> list[str]:
    """The flags that decide a CPU's fast paths (vector width, native bf16, AMX)."""
    try:
        flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split(":")[1].split()
    except (OSError, StopIteration):
        return []
    return sorted(f for f in flags if f.startswith(("avx", "amx")) or f in ("fma", "f16c"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", default="beauty")
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--concurrent", type=int, default=20)
    parser.add_argument("--out")
    args = parser.parse_args()
    from gradio_client import Client

    service = DemoService(DemoConfig(dataset=args.dataset))
    started = time.perf_counter()
    service.warm_up(background=False)
    warm_s = time.perf_counter() - started
    demo = app.build_demo(service)
    demo.queue(max_size=64)
    port = _port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                **app.LAUNCH_OPTIONS)
    url = f"http://127.0.0.1:{port}/"
    keys = service.data.item_keys
    cases = [c for c in eval_cases(service.data, "test", 20) if len(c.history) == 20][: args.requests]
    histories = [[keys[i] for i in c.history] for c in cases]
    client = Client(url, verbose=False)
    try:
        client.predict(histories[0], "full", 10, api_name="/recommend")  # the HTTP path's own first call
        seconds = []
        for history in histories:
            t = time.perf_counter()
            client.predict(history, "full", 10, api_name="/recommend")
            seconds.append(time.perf_counter() - t)
        t = time.perf_counter()
        compared = client.predict(histories[0], None, 10, api_name="/compare")
        compare_s = time.perf_counter() - t

        def one(i: int) -> float:
            t0 = time.perf_counter()
            out = Client(url, verbose=False).predict(histories[i % len(histories)], "full", 10, api_name="/recommend")
            assert len(out["items"]) == 10
            return time.perf_counter() - t0

        t = time.perf_counter()
        with ThreadPoolExecutor(args.concurrent) as pool:
            together = list(pool.map(one, range(args.concurrent)))
        concurrent_s = time.perf_counter() - t
    finally:
        demo.close()
    quantiles = statistics.quantiles(seconds, n=20)
    report = {
        "bench": "demo", "dataset": args.dataset, "date": timestamp(), "warm_up_s": round(warm_s, 1),
        "serving": {name: service._models[name].serving for name in service._models},
        "recommend_history_items": 20, "recommend_requests": len(seconds),
        "recommend_p50_s": round(statistics.median(seconds), 3), "recommend_p95_s": round(quantiles[18], 3),
        "compare_variants": sorted(compared["variants"]), "compare_s": round(compare_s, 2),
        "concurrent_clients": args.concurrent, "concurrent_answered": len(together),
        "concurrent_wall_s": round(concurrent_s, 2), "concurrent_p50_s": round(statistics.median(together), 2),
        "machine": machine() | {"cpu_flags": _cpu_flags()},
    }
    print(json.dumps(report, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
