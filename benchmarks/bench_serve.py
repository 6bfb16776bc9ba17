"""Load test of ``mask2former serve``: the built-in ``shapes`` model on loopback, N client
threads posting examples/shapes.png, against a plain loop of the Python pipeline.

Starts ``python -m mask2former serve`` as a subprocess (the real command), waits for
/healthz, sends ``--requests`` requests from ``--clients`` threads, and prints throughput,
p50/p95 latency and the count of each status (every answer must be 200 or 503: a full queue
is answered 503 at once, never by a crash or a hang); then checks /healthz, stops the server
and times ``Pipeline.predict`` on the same image in this process, for scale.

Usage: python benchmarks/bench_serve.py [--requests 100] [--clients 8] [--threads 2]
       [--workers 1] [--max-batch 4] [--queue-size 32] [--loop 20]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(ROOT, "examples", "shapes.png")
BOUNDARY = "mask2former-bench"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def form_body(path: str) -> bytes:
    with open(path, "rb") as fh:
        data = fh.read()
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="image"; '
        f'filename="{os.path.basename(path)}"\r\nContent-Type: image/png\r\n\r\n'
    )
    return head.encode() + data + f"\r\n--{BOUNDARY}--\r\n".encode()


def post(url: str, body: bytes) -> Tuple[int, float]:
    """(HTTP status, seconds) of one request."""
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    )
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=300) as response:
            json.loads(response.read())
            status = response.status
    except urllib.error.HTTPError as e:
        json.loads(e.read())  # errors are JSON too
        status = e.code
    return status, time.perf_counter() - start


def start_server(args: argparse.Namespace, port: int) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    command = [
        sys.executable, "-m", "mask2former", "serve", "--model", "shapes", "--port", str(port),
        "--workers", str(args.workers), "--max-batch", str(args.max_batch),
        "--queue-size", str(args.queue_size),
    ]  # fmt: skip
    quiet = subprocess.DEVNULL  # uvicorn logs every request
    server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=quiet, stderr=quiet)
    deadline = time.monotonic() + 180
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5):
                return server
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the server did not start") from None
            time.sleep(0.3)


def load_test(args: argparse.Namespace) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_server(args, port)
    try:
        body = form_body(EXAMPLE)
        post(url + "/v1/segment", body)  # warm-up: first forward pass
        start = time.perf_counter()
        with ThreadPoolExecutor(args.clients) as pool:
            answers = list(
                pool.map(lambda _: post(url + "/v1/segment", body), range(args.requests))
            )
        wall = time.perf_counter() - start
        with urllib.request.urlopen(url + "/healthz", timeout=10) as response:
            health = json.loads(response.read())
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(60)
    statuses = collections.Counter(status for status, _ in answers)
    ok = sorted(seconds for status, seconds in answers if status == 200)
    print(
        f"server: {args.workers} worker(s), --max-batch {args.max_batch}, --queue-size "
        f"{args.queue_size}, {args.threads} thread(s); {args.clients} clients, "
        f"{args.requests} requests of examples/shapes.png (384x384)"
    )
    print(f"statuses: {dict(sorted(statuses.items()))}")
    print(f"wall {wall:.2f} s, throughput {statuses[200] / wall:.2f} answered images/s")
    if ok:
        p95 = ok[min(len(ok) - 1, int(round(0.95 * len(ok))) - 1)]
        print(f"latency of 200s: p50 {statistics.median(ok) * 1e3:.0f} ms, p95 {p95 * 1e3:.0f} ms")
    print(f"/healthz afterwards: {health}; server exit code {server.returncode}")
    if set(statuses) - {200, 503} or health.get("status") != "ok":
        raise SystemExit("FAILED: an answer other than 200/503, or an unhealthy server")


def pipeline_loop(args: argparse.Namespace) -> None:
    import torch

    from mask2former.inference.images import load_image
    from mask2former.inference.pipeline import build_pipeline

    torch.set_num_threads(args.threads)
    pipeline = build_pipeline("shapes")
    image = load_image(EXAMPLE)
    options = pipeline.info.options()
    for _ in range(2):
        pipeline.predict([image], options)
    times = []
    for _ in range(args.loop):
        start = time.perf_counter()
        pipeline.predict([image], options)
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    print(
        f"plain loop, Pipeline.predict in-process, {args.threads} thread(s): median "
        f"{median * 1e3:.0f} ms per image ({1 / median:.2f} images/s), best "
        f"{min(times) * 1e3:.0f} ms, {args.loop} runs"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2, help="torch threads, server and loop")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--max-batch", type=int, default=4)
    parser.add_argument("--queue-size", type=int, default=32)
    parser.add_argument("--loop", type=int, default=20, help="runs of the plain pipeline loop")
    args = parser.parse_args()
    load_test(args)
    pipeline_loop(args)


if __name__ == "__main__":
    main()
