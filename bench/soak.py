"""Soak: many Socket.IO clients chatting across two workers for a bounded time, plus chart readers.

Not a test (not part of `make test`): a correctness run under sustained load, on loopback only.

    .venv/bin/python bench/soak.py [--seconds 60] [--clients 200] [--rate 40] [--http-clients 4]
                                   [--db postgresql+psycopg2://...] [--redis redis://127.0.0.1:6379/2]

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

Checks, each of which makes the run fail (exit status 1):
- every send is acknowledged (no refusal, no ack timeout);
- every acknowledged message is stored exactly once, with gap-free seqs per conversation;
- every client joined to a conversation receives every message sent to it once (lost = 0, duplicates = 0);
- no HTTP chart read fails;
- both workers exit 0 on SIGTERM, and `flask --app portal audit-verify` passes afterwards.
"""
from __future__ import annotations

import argparse
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

NS = "/chat"
ALICE = "00000000-0000-4000-8000-000000000001"  # a Family Medicine patient dr.chen may read
RATE_LIMIT_FOR_SOAK = "1000000"


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Client:
    """One Socket.IO connection of a user, joined to one conversation, recording what it receives."""

    def __init__(self, index: int, login: str, conversation_id: str, url: str, cookie: str, origin: str):
        import socketio

        self.index, self.login, self.conversation_id, self.url = index, login, conversation_id, url
        self.cookie, self.origin = cookie, origin
        self.sio = socketio.Client(reconnection=False, websocket_extra_options={"origin": origin})
        self.received: Counter[str] = Counter()
        self.delivery_ms: list[float] = []
        self.lock = threading.Lock()
        self.sio.on("message", self._on_message, namespace=NS)

    def _on_message(self, message: dict) -> None:
        now = time.perf_counter()
        if message.get("conversation_id") != self.conversation_id:
            return
        with self.lock:
            self.received[message["id"]] += 1
            try:
                self.delivery_ms.append((now - float(message["body"].split(" ", 1)[0])) * 1000)
            except (ValueError, KeyError):
                pass

    def connect(self) -> None:
        self.sio.connect(self.url, headers={"Cookie": self.cookie}, namespaces=[NS], transports=["websocket"],
                         wait_timeout=30)
        answer = self.sio.call("join", {"conversation_id": self.conversation_id}, namespace=NS, timeout=30)
        if not answer or not answer.get("ok"):
            raise RuntimeError(f"join failed for client {self.index}: {answer}")


class Tally:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sent = 0
        self.acked: list[dict] = []  # {id, conversation_id, seq, at}
        self.refused: Counter[str] = Counter()
        self.ack_ms: list[float] = []
        self.http_status: Counter[str] = Counter()
        self.http_ms: list[float] = []


def sender(client: Client, tally: Tally, interval: float, stop_at: float, rng: random.Random) -> None:
    import socketio

    time.sleep(rng.uniform(0, interval))
    while time.perf_counter() < stop_at:
        started = time.perf_counter()
        body = f"{started:.6f} soak message from client {client.index}"
        with tally.lock:
            tally.sent += 1
        try:
            answer = client.sio.call("send", {"conversation_id": client.conversation_id, "body": body,
                                              "idempotency_key": uuid.uuid4().hex}, namespace=NS, timeout=15)
        except socketio.exceptions.TimeoutError:
            answer = {"ok": False, "error": {"code": "ack_timeout"}}
        except socketio.exceptions.SocketIOError as exc:
            answer = {"ok": False, "error": {"code": type(exc).__name__}}
        elapsed = (time.perf_counter() - started) * 1000
        with tally.lock:
            if answer and answer.get("ok"):
                message = answer["message"]
                tally.acked.append({"id": message["id"], "conversation_id": message["conversation_id"],
                                    "seq": message["seq"], "at": started})
                tally.ack_ms.append(elapsed)
            else:
                tally.refused[(answer or {}).get("error", {}).get("code", "no_answer")] += 1
        time.sleep(max(0.0, rng.expovariate(1 / interval) - elapsed / 1000))


def chart_reader(session, urls: list[str], tally: Tally, stop_at: float, index: int) -> None:
    import requests

    paths = (f"/api/v1/patients/{ALICE}", f"/patients/{ALICE}", f"/api/v1/patients/{ALICE}/results")
    n = index
    while time.perf_counter() < stop_at:
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
    from tests.integration.test_messaging import start_direct

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
    import sqlalchemy as sa

    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.select(sa.column("id"), sa.column("conversation_id"), sa.column("seq"))
                                .select_from(sa.table("message"))).all()
    finally:
        engine.dispose()
    return [(r[0], r[1], r[2]) for r in rows if r[1] in conversation_ids]


def reset_postgres(url: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text("DROP SCHEMA public CASCADE"))
        conn.execute(sa.text("CREATE SCHEMA public"))
    engine.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--rate", type=float, default=40.0, help="sends per second, all clients together")
    parser.add_argument("--http-clients", type=int, default=4)
    parser.add_argument("--db", help="PostgreSQL URL of a scratch database (its public schema is dropped); "
                                     "default: a temporary SQLite file")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/2",
                        help="message queue; this Redis database is flushed first")
    args = parser.parse_args(argv)

    import redis

    from tests.conftest import free_port
    from tests.integration.test_messaging import user_id_of
    from tests.support.portal_server import PortalServer, portal_env, prepare_database, sign_in

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
    failures: list[str] = []
    tally = Tally()
    clients: list[Client] = []
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
        for index in range(args.clients):
            login, conversation_id = pairs[index % len(pairs)]
            clients.append(Client(index, login, conversation_id, urls[index % 2], cookies[login], origin))
        started = time.perf_counter()
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda c: c.connect(), clients))
        print(f"      {len(clients)} clients connected and joined {len({c.conversation_id for c in clients})} "
              f"conversations in {time.perf_counter() - started:.1f} s")

        stop_at = time.perf_counter() + args.seconds
        interval = args.clients / args.rate
        threads = [threading.Thread(target=sender, args=(c, tally, interval, stop_at, random.Random(c.index)))
                   for c in clients]
        readers = [threading.Thread(target=chart_reader, args=(sessions["dr.chen"], urls, tally, stop_at, i))
                   for i in range(args.http_clients)]
        for thread in threads + readers:
            thread.start()
        for thread in threads + readers:
            thread.join()
        drain_deadline = time.perf_counter() + 10
        members: dict[str, list[Client]] = defaultdict(list)
        for client in clients:
            members[client.conversation_id].append(client)
        expected_total = sum(len(members[m["conversation_id"]]) for m in tally.acked)

        def delivered() -> int:
            return sum(min(1, c.received[m["id"]]) for m in tally.acked for c in members[m["conversation_id"]])

        while delivered() < expected_total and time.perf_counter() < drain_deadline:
            time.sleep(0.5)
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda c: c.sio.disconnect(), clients))
        for session in sessions.values():
            session.close()
    finally:
        for worker in workers:
            worker.stop()
            exit_codes.append(worker.process.returncode if worker.process else None)

    # --- the invariants --------------------------------------------------------------------------------
    acked_ids = [m["id"] for m in tally.acked]
    refused = sum(tally.refused.values())
    if refused:
        failures.append(f"{refused} sends not acknowledged: {dict(tally.refused)}")
    stored = stored_messages(database_url, {c.conversation_id for c in clients})
    stored_ids = Counter(row[0] for row in stored)
    missing = [i for i in acked_ids if i not in stored_ids]
    twice = [i for i, n in stored_ids.items() if n > 1]
    seqs: dict[str, list[int]] = defaultdict(list)
    for _id, conversation_id, seq in stored:
        seqs[conversation_id].append(seq)
    gaps = [cid for cid, s in seqs.items() if sorted(s) != list(range(1, len(s) + 1))]
    if missing or twice or gaps:
        failures.append(f"storage: {len(missing)} acknowledged but not stored, {len(twice)} stored twice, "
                        f"{len(gaps)} conversations with seq gaps")
    lost = duplicates = 0
    for message in tally.acked:
        for client in members[message["conversation_id"]]:
            count = client.received[message["id"]]
            lost += count == 0
            duplicates += max(0, count - 1)
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

    delivery_ms = [ms for c in clients for ms in c.delivery_ms]
    duration = args.seconds
    print(f"messages  sent {tally.sent}, acknowledged {len(acked_ids)} ({len(acked_ids) / duration:.1f}/s), "
          f"refused or timed out {refused}, stored {len(stored_ids)}")
    print(f"delivery  expected {expected_total} (message x joined client), delivered {expected_total - lost} "
          f"({(expected_total - lost) / duration:.0f}/s), lost {lost}, duplicates {duplicates}")
    print(f"latency   send->ack p50 {percentile(tally.ack_ms, 0.5):.1f} ms  p99 {percentile(tally.ack_ms, 0.99):.1f} ms;"
          f"  send->delivery p50 {percentile(delivery_ms, 0.5):.1f} ms  p99 {percentile(delivery_ms, 0.99):.1f} ms")
    print(f"http      {sum(tally.http_status.values())} chart reads, errors {http_errors}, "
          f"p50 {percentile(tally.http_ms, 0.5):.1f} ms  p99 {percentile(tally.http_ms, 0.99):.1f} ms")
    print(f"shutdown  worker exit codes on SIGTERM: {exit_codes}")
    print(f"audit     flask audit-verify: {'OK' if verify.returncode == 0 else 'FAILED'} ({verify_summary})")
    print("RESULT    " + ("PASS" if not failures else "FAIL: " + "; ".join(failures)))
    if not failures:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    else:
        print(f"          worker logs kept in {tmp}")
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
