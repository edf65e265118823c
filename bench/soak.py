"""Soak: many Socket.IO clients chatting across two workers for a bounded time, plus chart readers.

Not a test (not part of `make test`): a correctness run under sustained load, on loopback only. Long
because it is one program an operator runs on its own: its clients, load, checks and report together.

    .venv/bin/python bench/soak.py [--seconds 60] [--clients 200] [--rate 20] [--http-clients 4]
                                   [--client-processes 4] [--db postgresql+psycopg2://...]
                                   [--redis redis://127.0.0.1:6379/2]

Two `run.py` workers share a database (a temporary SQLite file, or the --db PostgreSQL URL, whose
portal tables are created and seeded) and PORTAL_MESSAGE_QUEUE on --redis (that Redis database is
flushed first, and only that one). Users: the development provider only has three clinician accounts
(dr.chen, dr.okafor, dr.reyes), so each signs in once and its session cookie is shared by many
Socket.IO connections, as one person with many tabs and devices would; the clients are spread over
every conversation those three can reach (their care-team threads and their direct conversations)
and alternate between the two workers. The per-user send limit (PORTAL_MESSAGE_RATE_PER_MINUTE, 30 by
default) would refuse such a crowd sharing three users, so the soak raises it to 1,000,000 and says
so. Senders are open-loop: each client sends at random (exponential) intervals, --rate sends per
second in total.

Capacity measured on a 2-core machine that also runs the load generator, both workers, the database
and Redis (2026-11-27): with 200 clients the portal acknowledged about 20-21 sends/s (about 660
deliveries/s). At --rate 20 the full form passes on PostgreSQL (0 lost, 0 duplicates, p50 send->ack
1.2 s); at --rate 40 it cannot keep up (p50 6.6 s, ack time-outs) and the run fails, as it should.
On SQLite a writer waiting for the other worker's lock blocks its whole eventlet hub, so use --db
PostgreSQL for the production-like figure.

Load generator: the clients are spread over --client-processes spawned processes (one Python process could
not drive 200 clients: it sat GIL-bound at ~100% CPU and its clients missed pings and were disconnected).
Each client behaves like static/js/chat.js: it keeps messages by seq, and a gap or a reconnect (after a
ping timeout etc.) triggers a `history` catch-up after the last contiguous seq it saw; a send that times
out is retried with the same idempotency key (up to 3 attempts) before it counts as not acknowledged.
Each process reports its sends, acks and per-client receipts to the parent, which does the accounting.

Checks, each of which makes the run fail (exit status 1):
- every send is acknowledged (no refusal, no ack timeout);
- every acknowledged message is stored exactly once, with gap-free seqs per conversation;
- every client joined to a conversation obtains every acknowledged message sent to it, live or by a
  `history` catch-up (lost = 0), and none is shown twice or broadcast twice to one connection (duplicates = 0);
- no HTTP chart read fails;
- both workers exit 0 on SIGTERM, and `flask --app portal audit-verify` passes afterwards.
"""
from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import redis
import requests
import socketio
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.chat import start_direct, user_id_of
from tests.support.environment import free_port
from tests.support.portal_server import PortalServer, portal_env, prepare_database, sign_in

NS = "/chat"
ALICE = "00000000-0000-4000-8000-000000000001"  # a Family Medicine patient dr.chen may read
RATE_LIMIT_FOR_SOAK = "1000000"


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


HISTORY_PAGE = 50  # chat.js's page size for `history` catch-ups
SEND_ATTEMPTS = 3  # a send that times out is retried with the same idempotency key, as chat.js's Retry does
SEND_TIMEOUT = 15.0  # seconds; chat.js's ack timeout for `send`
REJOIN_WAIT = 30.0  # seconds a send waits for a disconnected client to be connected and joined again


class Client:
    """One Socket.IO connection of a user, joined to one conversation, behaving like static/js/chat.js.

    Messages are kept by seq (a message already shown is never shown twice); a gap (a seq past the next
    expected one) or a reconnect triggers a `history` catch-up after the last contiguous seq seen. After a
    disconnect (ping timeout etc.) the client reconnects, re-joins and catches up, and counts the reconnect.
    """

    def __init__(self, index: int, login: str, conversation_id: str, url: str, cookie: str, origin: str):
        self.index, self.login, self.conversation_id, self.url = index, login, conversation_id, url
        self.cookie, self.origin = cookie, origin
        self.sio = socketio.Client(reconnection=True, reconnection_delay=0.5, reconnection_delay_max=5,
                                   websocket_extra_options={"origin": origin})
        self.lock = threading.Lock()
        self.live: Counter[str] = Counter()  # message id -> `message` events received for it
        self.shown: dict[int, str] = {}  # seq -> message id, whether obtained live or by catch-up
        self.by_catch_up: set[str] = set()  # ids first obtained through `history`
        self.last_seq = 0  # highest seq up to which every message is shown
        self.delivery_ms: list[float] = []
        self.joined = threading.Event()
        self.ever_joined = False
        self.closing = False
        self.disconnects = 0
        self.reconnects = 0
        self.catch_ups = 0  # `history` calls
        self.catch_up_errors: Counter[str] = Counter()
        self.join_errors: Counter[str] = Counter()
        self.catching_up = False
        self.catch_up_again = False
        self.sio.on("message", self._on_message, namespace=NS)
        self.sio.on("connect", self._on_connect, namespace=NS)
        self.sio.on("disconnect", self._on_disconnect, namespace=NS)

    # --- receiving -------------------------------------------------------------------------------------
    def _insert(self, message: dict, live: bool) -> bool:
        """chat.js's insertMessage; returns True when a gap remains (a catch-up is due). Caller holds the lock."""
        seq = message.get("seq")
        if not isinstance(seq, int) or seq in self.shown:
            return False
        self.shown[seq] = message["id"]
        if not live:
            self.by_catch_up.add(message["id"])
        while self.last_seq + 1 in self.shown:
            self.last_seq += 1
        return seq > self.last_seq

    def _on_message(self, message: dict) -> None:
        now = time.time()
        if message.get("conversation_id") != self.conversation_id:
            return
        with self.lock:
            self.live[message["id"]] += 1
            first = message.get("seq") not in self.shown
            gap = self._insert(message, live=True)
            if first:
                try:
                    self.delivery_ms.append((now - float(message["body"].split(" ", 1)[0])) * 1000)
                except (ValueError, KeyError):
                    pass
        if gap:
            self.catch_up()

    def catch_up(self) -> None:
        """Fetch, in pages, every message after the last contiguous seq (in a thread: handlers must not block)."""
        with self.lock:
            if not self.joined.is_set():
                return
            if self.catching_up:
                self.catch_up_again = True
                return
            self.catching_up = True
        threading.Thread(target=self._catch_up, daemon=True).start()

    def _catch_up(self) -> None:
        while True:
            with self.lock:
                after, self.catch_up_again = self.last_seq, False
            try:
                self.catch_ups += 1
                answer = self.sio.call("history", {"conversation_id": self.conversation_id, "after_seq": after,
                                                   "limit": HISTORY_PAGE}, namespace=NS, timeout=SEND_TIMEOUT)
            except socketio.exceptions.SocketIOError as exc:  # disconnected: the reconnect catches up again
                answer = {"ok": False, "error": {"code": type(exc).__name__}}
            with self.lock:
                if not answer or not answer.get("ok"):
                    self.catch_up_errors[(answer or {}).get("error", {}).get("code", "no_answer")] += 1
                    self.catching_up = False
                    return
                for message in answer.get("messages", []):
                    if message.get("conversation_id") == self.conversation_id:
                        self._insert(message, live=False)
                if not (answer.get("has_more") or self.catch_up_again):
                    self.catching_up = False
                    return

    # --- connection ------------------------------------------------------------------------------------
    def _on_connect(self) -> None:
        if self.ever_joined:  # a reconnect: re-join, then catch up from last_seq (in a thread, see catch_up)
            self.reconnects += 1
            threading.Thread(target=self._join, daemon=True).start()

    def _on_disconnect(self, *reason) -> None:
        self.joined.clear()
        if not self.closing:
            self.disconnects += 1

    def _join(self) -> None:
        for _attempt in range(5):
            try:
                answer = self.sio.call("join", {"conversation_id": self.conversation_id}, namespace=NS, timeout=30)
            except socketio.exceptions.SocketIOError as exc:
                answer = {"ok": False, "error": {"code": type(exc).__name__}}
            if answer and answer.get("ok"):
                with self.lock:
                    if not self.ever_joined:
                        self.last_seq = int(answer.get("last_seq") or 0)  # nothing before the soak is expected
                        self.ever_joined = True
                    self.catching_up = False
                self.joined.set()
                self.catch_up()
                return
            self.join_errors[(answer or {}).get("error", {}).get("code", "no_answer")] += 1
            if not self.sio.connected:
                return  # the next reconnect joins again
            time.sleep(1)

    def connect(self) -> None:
        self.sio.connect(self.url, headers={"Cookie": self.cookie}, namespaces=[NS], transports=["websocket"],
                         wait_timeout=30)
        self._join()
        if not self.joined.is_set():
            raise RuntimeError(f"join failed for client {self.index}: {dict(self.join_errors)}")

    def close(self) -> None:
        self.closing = True
        with contextlib.suppress(Exception):  # closing anyway
            self.sio.disconnect()

    def report(self) -> dict:
        with self.lock:
            return {"index": self.index, "conversation_id": self.conversation_id, "live": dict(self.live),
                    "obtained": set(self.shown.values()),
                    "shown_twice": sum(n - 1 for n in Counter(self.shown.values()).values() if n > 1),
                    "by_catch_up": set(self.by_catch_up),
                    "delivery_ms": list(self.delivery_ms), "disconnects": self.disconnects,
                    "reconnects": self.reconnects, "catch_ups": self.catch_ups,
                    "catch_up_errors": dict(self.catch_up_errors), "join_errors": dict(self.join_errors),
                    "connected_at_end": self.joined.is_set()}


class Tally:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sent = 0
        self.acked: list[dict] = []  # {id, conversation_id, seq}
        self.refused: Counter[str] = Counter()
        self.retried = 0  # sends acknowledged only after a retry with the same key
        self.replays = 0  # retries the server answered as a duplicate of the stored original
        self.ack_ms: list[float] = []
        self.http_status: Counter[str] = Counter()
        self.http_ms: list[float] = []


def sender(client: Client, tally: Tally, interval: float, stop_at: float, rng: random.Random) -> None:
    """Open loop: sends at random (exponential) intervals until stop_at (wall clock), as before; a send
    waits while its client is disconnected (chat.js disables the composer), and one that times out or
    fails is retried with the same idempotency key, up to SEND_ATTEMPTS, before it counts as refused."""
    time.sleep(rng.uniform(0, interval))
    while time.time() < stop_at:
        started = time.perf_counter()
        body = f"{time.time():.6f} soak message from client {client.index}"
        key = uuid.uuid4().hex
        with tally.lock:
            tally.sent += 1
        answer: dict | None = None
        attempts = 0
        while attempts < SEND_ATTEMPTS:
            attempts += 1
            if not client.joined.wait(REJOIN_WAIT):
                answer = {"ok": False, "error": {"code": "not_joined"}}
                continue
            try:
                answer = client.sio.call("send", {"conversation_id": client.conversation_id, "body": body,
                                                  "idempotency_key": key}, namespace=NS, timeout=SEND_TIMEOUT)
            except socketio.exceptions.TimeoutError:
                answer = {"ok": False, "error": {"code": "ack_timeout"}}
            except socketio.exceptions.SocketIOError as exc:
                answer = {"ok": False, "error": {"code": type(exc).__name__}}
                time.sleep(0.2)
            if answer and answer.get("ok"):
                break
            if (answer or {}).get("error", {}).get("code") not in ("ack_timeout", "not_joined", "BadNamespaceError",
                                                                    "ConnectionError", "no_answer"):
                break  # refused by the server (validation, forbidden...): a retry would be refused too
        elapsed = (time.perf_counter() - started) * 1000
        with tally.lock:
            if answer and answer.get("ok"):
                message = answer["message"]
                tally.acked.append({"id": message["id"], "conversation_id": message["conversation_id"],
                                    "seq": message["seq"]})
                tally.ack_ms.append(elapsed)
                tally.retried += attempts > 1
                tally.replays += bool(answer.get("duplicate"))
            else:
                tally.refused[(answer or {}).get("error", {}).get("code", "no_answer")] += 1
        time.sleep(max(0.0, rng.expovariate(1 / interval) - elapsed / 1000))


def client_process(number: int, specs: list[tuple], interval: float, control, results) -> None:
    """One load-generator process (spawned): connects its share of the clients, sends until told to stop,
    then waits for the parent's list of acknowledged messages, lets its clients drain, and reports."""
    sys.path.insert(0, str(ROOT))
    clients = [Client(*spec) for spec in specs]
    started = time.perf_counter()
    errors: list[str] = []

    def connect(client: Client) -> None:
        try:
            client.connect()
        except Exception as exc:  # noqa: BLE001 - reported to the parent, which fails the run
            errors.append(f"client {client.index}: {type(exc).__name__}: {exc}")

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(connect, clients))
    results.put(("ready", number, time.perf_counter() - started, errors))
    command, stop_at = control.get()
    if command != "go":
        for client in clients:
            client.close()
        return
    tally = Tally()
    threads = [threading.Thread(target=sender, args=(c, tally, interval, stop_at, random.Random(c.index)))
               for c in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    results.put(("sent", number, {"sent": tally.sent, "acked": tally.acked, "refused": dict(tally.refused),
                                  "retried": tally.retried, "replays": tally.replays, "ack_ms": tally.ack_ms}))
    _command, expected, deadline = control.get()  # conversation id -> ids acknowledged in it (all processes)

    def complete() -> bool:
        for client in clients:
            with client.lock:
                if not set(expected.get(client.conversation_id, ())) <= set(client.shown.values()):
                    return False
        return True

    while not complete() and time.time() < deadline:
        time.sleep(0.25)
    reports = [client.report() for client in clients]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda c: c.close(), clients))
    results.put(("done", number, reports))


def chart_reader(session, urls: list[str], tally: Tally, stop_at: float, index: int) -> None:
    paths = (f"/api/v1/patients/{ALICE}", f"/patients/{ALICE}", f"/api/v1/patients/{ALICE}/results")
    n = index
    while time.time() < stop_at:
        url = urls[n % len(urls)] + paths[n % len(paths)]
        n += 1
        started = time.perf_counter()
        try:
            status = str(session.get(url, timeout=15).status_code)
        except requests.RequestException as exc:
            status = type(exc).__name__
        with tally.lock:
            tally.http_status[status] += 1
            tally.http_ms.append((time.perf_counter() - started) * 1000)
        time.sleep(0.05)


def conversations(url: str, sessions: dict, ids: dict) -> list[tuple[str, str]]:
    """(login, conversation id) for every conversation the three clinicians can reach."""
    pairs: list[tuple[str, str]] = []
    for login, session in sessions.items():
        page = session.get(url + "/messages", timeout=10).text
        for match in re.finditer(r'data-conversation-id="([^"]+)" data-kind="team"', page):
            pairs.append((login, match.group(1)))
    logins = sorted(sessions)
    for i, first in enumerate(logins):
        for second in logins[i + 1:]:
            direct = start_direct(url, sessions[first], ids[second])
            pairs += [(first, direct), (second, direct)]
    return pairs


def stored_messages(database_url: str, conversation_ids: set[str]) -> list[tuple[str, str, int]]:
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.select(sa.column("id"), sa.column("conversation_id"), sa.column("seq"))
                                .select_from(sa.table("message"))).all()
    finally:
        engine.dispose()
    return [(r[0], r[1], r[2]) for r in rows if r[1] in conversation_ids]


def reset_postgres(url: str) -> None:
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text("DROP SCHEMA public CASCADE"))
        conn.execute(sa.text("CREATE SCHEMA public"))
    engine.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--rate", type=float, default=20.0, help="sends per second, all clients together")
    parser.add_argument("--http-clients", type=int, default=4)
    parser.add_argument("--client-processes", type=int, default=4,
                        help="load-generator processes the Socket.IO clients are spread over")
    parser.add_argument("--db", help="PostgreSQL URL of a scratch database (its public schema is dropped); "
                                     "default: a temporary SQLite file")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/2",
                        help="message queue; this Redis database is flushed first")
    args = parser.parse_args(argv)


    redis.Redis.from_url(args.redis).flushdb()
    tmp = Path(tempfile.mkdtemp(prefix="portal-soak-"))
    if args.db:
        reset_postgres(args.db)
    database_url = args.db or f"sqlite:///{tmp / 'soak.db'}"
    ports = [free_port(), free_port()]
    env = portal_env(tmp, database_url, ports[0], PORTAL_MESSAGE_QUEUE=args.redis, PORTAL_LOG_LEVEL="WARNING",
                     PORTAL_MESSAGE_RATE_PER_MINUTE=RATE_LIMIT_FOR_SOAK)
    prepare_database(env, patients=12)
    workers = [PortalServer(env, port, tmp / f"worker-{port}.log") for port in ports]
    backend = "PostgreSQL" if args.db else "SQLite (temporary file)"
    print(f"soak: {args.seconds:.0f} s, {args.clients} Socket.IO clients over 2 workers, ~{args.rate:.0f} sends/s, "
          f"{args.http_clients} HTTP chart readers; database {backend}; queue {args.redis}")
    print(f"      users: dr.chen, dr.okafor, dr.reyes (the provider's clinician accounts), each signed in once and "
          f"shared by ~{args.clients // 3} connections; PORTAL_MESSAGE_RATE_PER_MINUTE={RATE_LIMIT_FOR_SOAK} "
          "(raised from 30 for the soak)")
    print(f"      load generator: {args.client_processes} processes (spawn) of ~{args.clients // args.client_processes} "
          f"clients each; clients reconnect, re-join and catch up with `history` like static/js/chat.js; a send "
          f"that times out is retried with the same idempotency key (up to {SEND_ATTEMPTS} attempts)")
    failures: list[str] = []
    tally = Tally()
    reports: list[dict] = []
    processes: list = []
    exit_codes: list[int | None] = []
    try:
        for worker in workers:
            worker.start()
        urls = [w.url for w in workers]
        origin = urls[0]
        sessions = {login: sign_in(origin, login) for login in ("dr.chen", "dr.okafor", "dr.reyes")}
        ids = {login: user_id_of(s, origin) for login, s in sessions.items()}
        pairs = conversations(origin, sessions, ids)
        cookies = {login: "; ".join(f"{c.name}={c.value}" for c in s.cookies) for login, s in sessions.items()}
        specs = []
        for index in range(args.clients):
            login, conversation_id = pairs[index % len(pairs)]
            specs.append((index, login, conversation_id, urls[index % 2], cookies[login], origin))
        n_proc = max(1, min(args.client_processes, args.clients))
        interval = args.clients / args.rate
        context = multiprocessing.get_context("spawn")
        results = context.Queue()
        controls = [context.Queue() for _ in range(n_proc)]
        processes = [context.Process(target=client_process, args=(i, specs[i::n_proc], interval, controls[i], results),
                                     name=f"soak-clients-{i}", daemon=True) for i in range(n_proc)]
        started = time.perf_counter()
        for process in processes:
            process.start()

        def collect(kind: str, timeout: float) -> dict[int, object]:
            got: dict[int, object] = {}
            deadline = time.time() + timeout
            while len(got) < n_proc:
                message = results.get(timeout=max(1.0, deadline - time.time()))
                if message[0] != kind:
                    raise RuntimeError(f"unexpected {message[0]!r} from a client process while waiting for {kind!r}")
                got[message[1]] = message[2:]
            return got

        ready = collect("ready", 300)
        connect_errors = [e for (_elapsed, errors) in ready.values() for e in errors]
        if connect_errors:
            for control in controls:
                control.put(("stop", 0.0))
            raise RuntimeError(f"{len(connect_errors)} clients failed to connect or join: {connect_errors[:3]}")
        print(f"      {args.clients} clients connected and joined {len({s[2] for s in specs})} "
              f"conversations in {time.perf_counter() - started:.1f} s")

        stop_at = time.time() + 1.0 + args.seconds
        for control in controls:
            control.put(("go", stop_at))
        readers = [threading.Thread(target=chart_reader, args=(sessions["dr.chen"], urls, tally, stop_at, i))
                   for i in range(args.http_clients)]
        for thread in readers:
            thread.start()
        sent = collect("sent", args.seconds + 300)
        for thread in readers:
            thread.join()
        for (part,) in sent.values():
            tally.sent += part["sent"]
            tally.acked += part["acked"]
            tally.refused.update(part["refused"])
            tally.retried += part["retried"]
            tally.replays += part["replays"]
            tally.ack_ms += part["ack_ms"]
        expected: dict[str, list[str]] = defaultdict(list)
        for message in tally.acked:
            expected[message["conversation_id"]].append(message["id"])
        drain_deadline = time.time() + 15
        for control in controls:
            control.put(("drain", dict(expected), drain_deadline))
        for (part,) in collect("done", 120).values():
            reports += part
        for process in processes:
            process.join(30)
        for session in sessions.values():
            session.close()
    finally:
        for process in processes:
            if process.is_alive():
                process.kill()
        for worker in workers:
            worker.stop()
            exit_codes.append(worker.process.returncode if worker.process else None)

    # --- the invariants --------------------------------------------------------------------------------
    acked_ids = [m["id"] for m in tally.acked]
    refused = sum(tally.refused.values())
    if refused:
        failures.append(f"{refused} sends not acknowledged after {SEND_ATTEMPTS} attempts: {dict(tally.refused)}")
    stored = stored_messages(database_url, {r["conversation_id"] for r in reports})
    stored_ids = Counter(row[0] for row in stored)
    missing = [i for i in acked_ids if i not in stored_ids]
    twice = [i for i, n in stored_ids.items() if n > 1]
    acked_twice = sum(n - 1 for n in Counter(acked_ids).values() if n > 1)
    seqs: dict[str, list[int]] = defaultdict(list)
    for _id, conversation_id, seq in stored:
        seqs[conversation_id].append(seq)
    gaps = [cid for cid, s in seqs.items() if sorted(s) != list(range(1, len(s) + 1))]
    if missing or twice or gaps or acked_twice:
        failures.append(f"storage: {len(missing)} acknowledged but not stored, {len(twice)} stored twice, "
                        f"{acked_twice} acknowledged twice, {len(gaps)} conversations with seq gaps")
    # A joined client obtains a message live (a `message` event) or by a `history` catch-up after a gap or a
    # reconnect, as chat.js does. lost = acknowledged but never obtained by a client joined to its conversation;
    # duplicates = a message shown twice (the same id at two seqs) or broadcast twice to one connection.
    lost = duplicates = by_catch_up = 0
    expected_total = 0
    for report in reports:
        ids_here = expected.get(report["conversation_id"], [])
        expected_total += len(ids_here)
        obtained, live = report["obtained"], report["live"]
        lost += sum(1 for i in ids_here if i not in obtained)
        by_catch_up += sum(1 for i in ids_here if i in report["by_catch_up"])
        duplicates += sum(n - 1 for n in live.values() if n > 1) + report["shown_twice"]
    disconnects = sum(r["disconnects"] for r in reports)
    reconnects = sum(r["reconnects"] for r in reports)
    catch_ups = sum(r["catch_ups"] for r in reports)
    catch_up_errors: Counter[str] = Counter()
    join_errors: Counter[str] = Counter()
    for report in reports:
        catch_up_errors.update(report["catch_up_errors"])
        join_errors.update(report["join_errors"])
    not_connected = sum(1 for r in reports if not r["connected_at_end"])
    if len(reports) != args.clients:
        failures.append(f"only {len(reports)} of {args.clients} clients reported")
    if lost or duplicates:
        failures.append(f"delivery: {lost} lost, {duplicates} duplicates")
    http_errors = sum(n for status, n in tally.http_status.items() if status != "200")
    if http_errors:
        failures.append(f"HTTP: {http_errors} failed reads {dict(tally.http_status)}")
    if exit_codes != [0, 0]:
        failures.append(f"workers exited with {exit_codes} on SIGTERM")
    verify = subprocess.run([sys.executable, "-m", "flask", "--app", "portal", "audit-verify"], env=env, cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    verify_summary = (verify.stdout.strip().splitlines() or ["(no output)"])[-1]
    if verify.returncode != 0:
        failures.append(f"audit-verify failed: {verify.stdout[-500:]} {verify.stderr[-500:]}")

    delivery_ms = [ms for r in reports for ms in r["delivery_ms"]]
    duration = args.seconds
    print(f"messages  sent {tally.sent}, acknowledged {len(acked_ids)} ({len(acked_ids) / duration:.1f}/s), "
          f"refused or timed out {refused}, stored {len(stored_ids)}; acknowledged after a retry {tally.retried} "
          f"(server replays {tally.replays})")
    print(f"delivery  expected {expected_total} (message x joined client), delivered {expected_total - lost} "
          f"({(expected_total - lost) / duration:.0f}/s; {by_catch_up} of them by history catch-up), lost {lost}, "
          f"duplicates {duplicates}")
    print(f"clients   disconnects {disconnects}, reconnects {reconnects}, history calls {catch_ups}, "
          f"failed catch-ups {dict(catch_up_errors) or 0}, failed joins {dict(join_errors) or 0}, "
          f"not connected at the end {not_connected}")
    print(f"latency   send->ack p50 {percentile(tally.ack_ms, 0.5):.1f} ms  p99 {percentile(tally.ack_ms, 0.99):.1f} ms;"
          f"  send->delivery p50 {percentile(delivery_ms, 0.5):.1f} ms  p99 {percentile(delivery_ms, 0.99):.1f} ms")
    print(f"http      {sum(tally.http_status.values())} chart reads, errors {http_errors}, "
          f"p50 {percentile(tally.http_ms, 0.5):.1f} ms  p99 {percentile(tally.http_ms, 0.99):.1f} ms")
    print(f"shutdown  worker exit codes on SIGTERM: {exit_codes}")
    print(f"audit     flask audit-verify: {'OK' if verify.returncode == 0 else 'FAILED'} ({verify_summary})")
    print("RESULT    " + ("PASS" if not failures else "FAIL: " + "; ".join(failures)))
    if not failures:
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        print(f"          worker logs kept in {tmp}")
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
