"""The message queue (Redis) goes away and comes back while two workers carry a conversation.

The database is the source of truth: while Redis is down every send is still acknowledged and
stored; only live delivery between (and, with a queue, within) workers pauses, and /readyz says so
(``message_queue: failed``, 503) so a load balancer and the operators can see it. When Redis is back,
delivery resumes on its own, and each client, asking ``history`` from the last seq it holds without a
gap, ends with every acknowledged message exactly once, in order.

Uses its own Redis server (tests.support.services.PrivateRedis) so the shared one is never stopped.
"""
from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from tests.support.chat import ChatClient, Timeline, catch_up, direct_chat_across_workers
from tests.support.portal_server import PortalServer, another_worker, running_portal
from tests.support.services import PrivateRedis
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.redis, pytest.mark.slow]
ACK_BUDGET = 3.0  # seconds: a send must be answered promptly even with the queue down


@pytest.fixture
def private_redis(tmp_path):
    server = PrivateRedis(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


def readiness(url: str) -> tuple[int, dict]:
    response = requests.get(url + "/readyz", timeout=10)
    return response.status_code, response.json()["checks"]


def timed_send(client: ChatClient, conversation_id: str, body: str) -> tuple[dict, float]:
    started = time.monotonic()
    ack = client.send(conversation_id, body, uuid.uuid4().hex)
    elapsed = time.monotonic() - started
    assert ack["ok"], ack
    return ack["message"], elapsed


@dataclass
class Chat:
    """Two workers sharing one queue; dr.chen on worker A, dr.okafor on worker B, in one direct conversation."""
    worker_a: PortalServer
    worker_b: PortalServer
    chen: ChatClient
    okafor: ChatClient
    ids: dict[str, str]
    direct: str
    start: int
    views: dict
    acked: list[dict] = field(default_factory=list)

    def send(self, who: str, body: str) -> float:
        """Send as ``who``; record the ack; return how long it took."""
        message, elapsed = timed_send(getattr(self, who), self.direct, body)
        self.acked.append(message)
        return elapsed

    def delivered_across(self, sender: str, receiver: str) -> bool:
        self.send(sender, f"probe from {sender}: is delivery back?")
        return _received(getattr(self, receiver), self.acked[-1]["id"], 0.7)

    def wait_for_live_delivery(self, timeout: float) -> None:
        wait_until(lambda: self.delivered_across("chen", "okafor"), timeout, "delivery from A to B", interval=0)
        wait_until(lambda: self.delivered_across("okafor", "chen"), timeout, "delivery from B to A", interval=0)


@contextmanager
def two_workers(tmp_path: Path, queue_url: str) -> Iterator[Chat]:
    with running_portal(tmp_path, f"sqlite:///{tmp_path / 'portal.db'}", patients=4,
                        PORTAL_MESSAGE_QUEUE=queue_url) as worker_a:
        with another_worker(worker_a) as worker_b, \
                direct_chat_across_workers(worker_a, worker_b) as (ids, direct, chen, okafor):
            try:
                start = chen.call("join", {"conversation_id": direct})["last_seq"]
                assert okafor.call("join", {"conversation_id": direct})["ok"]
                chen.wait_for("presence", lambda e: e["user"]["id"] == ids["dr.okafor"] and e["announce"])
                chat = Chat(worker_a, worker_b, chen, okafor, ids, direct, start,
                            {"chen": (chen, Timeline(start)), "okafor": (okafor, Timeline(start))})
                # Redis up: both directions deliver live.
                for n in range(3):
                    chat.send("chen", f"before the outage, chen {n}")
                    chat.send("okafor", f"before the outage, okafor {n}")
                for name, (client, view) in chat.views.items():
                    wait_until(lambda c=client, v=view: v.absorb(c, direct) >= chat.acked[-1]["seq"], 5,
                               f"{name} to receive the first messages live")
                yield chat
            finally:
                chen.close()
                okafor.close()


def send_through_outage(chat: Chat, label: str) -> list[dict]:
    """Four sends each way while the queue is out: all acknowledged promptly, stored with consecutive seqs."""
    slowest, first = 0.0, len(chat.acked)
    for n in range(4):
        for who in ("chen", "okafor"):
            slowest = max(slowest, chat.send(who, f"during the {label}, {who} {n}"))
    during = chat.acked[first:]
    assert slowest < ACK_BUDGET, f"a send took {slowest:.1f} s to be acknowledged during the {label}"
    assert [m["seq"] for m in during] == list(range(during[0]["seq"], during[0]["seq"] + len(during)))
    time.sleep(0.5)
    crossed = [m for m in chat.okafor.received("message")
               if m["id"] in {d["id"] for d in during} and m["sender"]["id"] == chat.ids["dr.chen"]]
    print(f"{label}: slowest ack {slowest:.2f} s; {len(crossed)} of 4 messages crossed from A to B live")
    return during


def finish(chat: Chat, resumed_at: float) -> dict[str, int]:
    chat.wait_for_live_delivery(20)
    print(f"delivery resumed {time.monotonic() - resumed_at:.1f} s after Redis was back")
    for n in range(3):
        chat.send("chen", f"after the outage, chen {n}")
        chat.send("okafor", f"after the outage, okafor {n}")
    last = chat.acked[-1]
    chat.chen.wait_for("message", lambda e: e["id"] == last["id"])
    chat.okafor.wait_for("message", lambda e: e["id"] == last["id"])
    # Each client fills its gaps from the last seq it holds and ends with the whole conversation.
    return settle(chat.views, chat.acked, chat.start, chat.direct, chat.ids)


def test_sends_survive_a_redis_outage_and_delivery_resumes(tmp_path, private_redis):
    with two_workers(tmp_path, private_redis.url) as chat:
        private_redis.stop()
        for url in (chat.worker_a.url, chat.worker_b.url):
            status, checks = readiness(url)
            assert status == 503 and checks["message_queue"] == "failed", (url, status, checks)
            assert checks["database"] == "ok" and checks["audit_store"] == "ok", checks
        during = send_through_outage(chat, "outage")
        # Nothing crosses workers while the queue is down (anything that did would be a hidden second channel).
        assert not [m for m in chat.okafor.received("message")
                    if m["id"] in {d["id"] for d in during} and m["sender"]["id"] == chat.ids["dr.chen"]]

        private_redis.start()
        for url in (chat.worker_a.url, chat.worker_b.url):
            wait_until(lambda u=url: readiness(u)[0] == 200, 10, f"{url}/readyz to recover")
        rounds = finish(chat, time.monotonic())
        assert rounds["chen"] >= 1 and rounds["okafor"] >= 1, f"history never needed ({rounds}): was Redis down?"


def test_a_hung_redis_does_not_hold_back_acks(tmp_path, private_redis):
    """SIGSTOP: Redis accepts connections but never answers (a paused VM, a stuck fork, a black hole)."""
    with two_workers(tmp_path, private_redis.url) as chat:
        private_redis.process.send_signal(signal.SIGSTOP)
        try:
            send_through_outage(chat, "hang")
            status, checks = readiness(chat.worker_a.url)
            assert status == 503 and checks["message_queue"] == "failed", (status, checks)
        finally:
            private_redis.process.send_signal(signal.SIGCONT)
        # Publications queued during the hang go out late once Redis answers again (those that timed out
        # are dropped); either way each client ends with every message exactly once.
        print("history rounds after the hang:", finish(chat, time.monotonic()))


def settle(views: dict, acked: list[dict], start: int, conversation_id: str, ids: dict[str, str]) -> dict[str, int]:
    """Each client asks ``history`` from the last seq it holds without a gap until it has everything; its
    timeline must then be exactly the acknowledged messages, once each, in seq order. Returns the rounds."""
    expected = [m["id"] for m in sorted(acked, key=lambda m: m["seq"])]
    assert len(expected) == len(set(expected))
    assert sorted(m["seq"] for m in acked) == list(range(start + 1, start + 1 + len(acked))), \
        "every stored message was acknowledged to someone in this test (no gap, no extra)"
    last = max(m["seq"] for m in acked)
    used = {}
    for name, (client, view) in views.items():
        live_ids = [m["id"] for m in client.received("message") if m.get("conversation_id") == conversation_id]
        assert len(live_ids) == len(set(live_ids)), f"{name} received a message twice live"
        for message in acked:
            if message["sender"]["id"] == ids[f"dr.{name}"]:
                view.add(message)  # one's own acks are known without delivery
        rounds = 0
        while (held := view.absorb(client, conversation_id)) < last:
            page = catch_up(client, conversation_id, held)
            assert page and page[0]["seq"] == held + 1, (name, held, page[:1])
            for message in page:
                view.add(message)
            rounds += 1
            assert rounds <= 5
        timeline = [view.by_seq[s]["id"] for s in range(start + 1, view.contiguous() + 1)]
        assert timeline == expected, f"{name}'s conversation differs from what was acknowledged"
        used[name] = rounds
    return used


def _received(client: ChatClient, message_id: str, timeout: float) -> bool:
    try:
        client.wait_for("message", lambda e: e["id"] == message_id, timeout=timeout)
        return True
    except AssertionError:
        return False
