"""Chat throughput and latency: the portal's /chat against a bare Flask-SocketIO echo server.

Not a test: prints delivered messages per second and send→receipt latency (p50/p99) with 50 and 200
connected clients, on one worker and on two workers sharing Redis, and the ratio portal/echo for
each, all measured in the same run on loopback. The echo server has the same shape (join a room,
`send` acked and broadcast to the room) without authentication, storage or audit, so the ratio is
the cost of those. Senders are closed-loop (each waits for its ack). Time is bounded by --seconds
per measurement (8 measurements plus start-up, about two minutes with the defaults).

Usage: python bench/bench_messaging.py [--seconds 4] [--senders 4] [--clients 50,200] [--redis redis://127.0.0.1:6379/0]
"""
from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests
import socketio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.environment import free_port
from tests.support.portal_server import PortalServer, portal_env, prepare_database, sign_in

NS = "/chat"


# --- the baseline: bench/bare_echo_server.py, a bare Flask-SocketIO echo server ---------------------

@contextmanager
def echo_workers(count: int, queue: str | None, tmp: Path) -> Iterator[list[str]]:
    channel = f"bench-echo-{uuid.uuid4().hex[:8]}"
    processes, urls = [], []
    try:
        for _ in range(count):
            port = free_port()
            log = open(tmp / f"echo-{port}.log", "ab")
            args = [sys.executable, str(ROOT / "bench" / "bare_echo_server.py"), str(port), channel]
            if queue:
                args.append(queue)
            processes.append(subprocess.Popen(args, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT))
            urls.append(f"http://127.0.0.1:{port}")
        for url in urls:
            deadline = time.monotonic() + 20
            while True:
                try:
                    if requests.get(url + "/healthz", timeout=1).ok:
                        break
                except requests.RequestException:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"echo server at {url} did not start")
                time.sleep(0.1)
        yield urls
    finally:
        for process in processes:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()


# --- the portal -----------------------------------------------------------------------------------

@dataclass
class PortalTarget:
    urls: list[str]
    cookies: list[str]  # one Cookie header per demo clinician; clients alternate between them
    conversation_id: str
    origin: str


@contextmanager
def portal_workers(count: int, queue: str | None, tmp: Path) -> Iterator[PortalTarget]:
    port = free_port()
    overrides = {"PORTAL_MESSAGE_RATE_PER_MINUTE": "100000000", "PORTAL_LOG_LEVEL": "ERROR"}
    if queue:
        overrides["PORTAL_MESSAGE_QUEUE"] = queue
    env = portal_env(tmp, f"sqlite:///{tmp / f'portal-{port}.db'}", port, **overrides)
    prepare_database(env, patients=4)
    with ExitStack() as stack:
        servers = [stack.enter_context(PortalServer(env, port, tmp / f"portal-{port}.log"))]
        for _ in range(count - 1):
            other = free_port()
            servers.append(stack.enter_context(PortalServer(env, other, tmp / f"portal-{other}.log")))
        first = servers[0].url
        sessions = [sign_in(first, login) for login in ("dr.chen", "dr.okafor")]
        page = sessions[0].get(first + "/messages", timeout=10).text
        match = re.search(r'data-conversation-id="([^"]+)" data-kind="team"[^>]*>\s*<span data-title>Family Medicine', page)
        if not match:
            raise RuntimeError("no Family Medicine conversation on the chat page")
        cookies = ["; ".join(f"{c.name}={c.value}" for c in s.cookies) for s in sessions]
        yield PortalTarget([s.url for s in servers], cookies, match.group(1), first)


# --- the load ---------------------------------------------------------------------------------------

@dataclass
class Result:
    delivered_per_s: float
    p50_ms: float
    p99_ms: float
    sent: int
    errors: int


def measure(urls: list[str], clients: int, conversation_id: str, seconds: float, senders: int,
            cookies: list[str] | None = None, origin: str | None = None) -> Result:
    latencies: list[float] = []
    lock = threading.Lock()
    window = {"start": float("inf"), "end": float("inf")}
    connected: list[socketio.Client] = []

    def on_message(data):
        now = time.perf_counter()
        try:
            sent_at = float(data["body"].split(" ", 1)[0])
        except (KeyError, ValueError, AttributeError):
            return
        if window["start"] <= sent_at <= window["end"]:
            with lock:
                latencies.append(now - sent_at)

    def open_client(index: int) -> socketio.Client:
        client = socketio.Client(reconnection=False,
                                 websocket_extra_options={"origin": origin} if origin else None)
        client.on("message", on_message, namespace=NS)
        headers = {"Cookie": cookies[index % len(cookies)]} if cookies else {}
        client.connect(urls[index % len(urls)], headers=headers, namespaces=[NS], transports=["websocket"],
                       wait_timeout=20)
        answer = client.call("join", {"conversation_id": conversation_id}, namespace=NS, timeout=20)
        if not answer or not answer.get("ok"):
            raise RuntimeError(f"join failed: {answer}")
        return client

    with ThreadPoolExecutor(16) as pool:
        connected.extend(pool.map(open_client, range(clients)))
    counts = {"sent": 0, "errors": 0}

    def sender(client: socketio.Client) -> None:
        while time.perf_counter() < window["end"]:
            body = f"{time.perf_counter():.6f} bench"
            try:
                answer = client.call("send", {"conversation_id": conversation_id, "body": body,
                                              "idempotency_key": uuid.uuid4().hex}, namespace=NS, timeout=10)
                ok = bool(answer and answer.get("ok"))
            except socketio.exceptions.TimeoutError:
                ok = False
            with lock:
                counts["sent" if ok else "errors"] += 1

    window["start"] = time.perf_counter()
    window["end"] = window["start"] + seconds
    threads = [threading.Thread(target=sender, args=(connected[i],)) for i in range(min(senders, clients))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    time.sleep(1.0)  # let the last broadcasts arrive
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda c: c.disconnect(), connected))
    ordered = sorted(latencies)
    p = (lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000) if ordered else (lambda q: float("nan"))
    return Result(len(ordered) / seconds, p(0.50), p(0.99), counts["sent"], counts["errors"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--senders", type=int, default=4)
    parser.add_argument("--clients", default="50,200")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args(argv)
    sizes = [int(n) for n in args.clients.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-messaging-") as tmp_name:
        tmp = Path(tmp_name)
        for workers in (1, 2):
            queue = args.redis if workers > 1 else None
            with echo_workers(workers, queue, tmp) as urls:
                echo = {n: measure(urls, n, "bench", args.seconds, args.senders) for n in sizes}
            with portal_workers(workers, queue, tmp) as target:
                portal = {n: measure(target.urls, n, target.conversation_id, args.seconds, args.senders,
                                     target.cookies, target.origin) for n in sizes}
            rows.extend((workers, n, echo[n], portal[n]) for n in sizes)
    print(f"{'workers':>7} {'clients':>7} | {'echo msg/s':>10} {'p50 ms':>7} {'p99 ms':>7} | "
          f"{'portal msg/s':>12} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6} | {'thru ratio':>10} {'p50 ratio':>9}")
    for workers, n, echo, portal in rows:
        ratio = portal.delivered_per_s / echo.delivered_per_s if echo.delivered_per_s else float("nan")
        latency_ratio = portal.p50_ms / echo.p50_ms if echo.p50_ms else float("nan")
        print(f"{workers:>7} {n:>7} | {echo.delivered_per_s:>10.0f} {echo.p50_ms:>7.1f} {echo.p99_ms:>7.1f} | "
              f"{portal.delivered_per_s:>12.0f} {portal.p50_ms:>7.1f} {portal.p99_ms:>7.1f} {portal.errors:>6} | "
              f"{ratio:>10.2f} {latency_ratio:>9.1f}")
    print("delivered msg/s = message events received by all clients per second; ratio = portal / echo.")
    print(f"median of p50 ratios: {statistics.median(p.p50_ms / e.p50_ms for _w, _n, e, p in rows if e.p50_ms):.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
