"""The message queue (Redis) goes away and comes back while two workers carry a conversation.

The database is the source of truth: while Redis is down every send is still acknowledged and
stored; only live delivery between (and, with a queue, within) workers pauses, and /readyz says so
(``message_queue: failed``, 503) so a load balancer and the operators can see it. When Redis is back,
delivery resumes on its own, and each client, asking ``history`` from the last seq it holds without a
gap, ends with every acknowledged message exactly once, in order.

Uses its own Redis server (tests.support.services.PrivateRedis) so the shared one is never stopped.
"""
from __future__ import annotations

import time
import uuid

import pytest
import requests

from tests.conftest import free_port
from tests.faults.test_worker_killed import Timeline, catch_up
from tests.integration.test_messaging import ChatClient, start_direct, user_id_of
from tests.support.portal_server import PortalServer, running_portal, sign_in
from tests.support.services import PrivateRedis

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


def wait_until(predicate, timeout: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def timed_send(client: ChatClient, conversation_id: str, body: str) -> tuple[dict, float]:
    started = time.monotonic()
    ack = client.send(conversation_id, body, uuid.uuid4().hex)
    elapsed = time.monotonic() - started
    assert ack["ok"], ack
    return ack["message"], elapsed


def test_sends_survive_a_redis_outage_and_delivery_resumes(tmp_path, private_redis):
    with running_portal(tmp_path, f"sqlite:///{tmp_path / 'portal.db'}", patients=4,
                        PORTAL_MESSAGE_QUEUE=private_redis.url) as worker_a:
        port = free_port()
        with PortalServer(worker_a.env, port, tmp_path / f"server-{port}.log") as worker_b:
            sessions = {login: sign_in(worker_a.url, login) for login in ("dr.chen", "dr.okafor")}
            ids = {login: user_id_of(s, worker_a.url) for login, s in sessions.items()}
            direct = start_direct(worker_a.url, sessions["dr.chen"], ids["dr.okafor"])
            for session in sessions.values():
                session.close()
            chen = ChatClient(worker_a.url, sessions["dr.chen"]).connect()
            okafor = ChatClient(worker_b.url, sessions["dr.okafor"], origin=worker_a.url).connect()
            try:
                start = chen.call("join", {"conversation_id": direct})["last_seq"]
                assert okafor.call("join", {"conversation_id": direct})["ok"]
                chen.wait_for("presence", lambda e: e["user"]["id"] == ids["dr.okafor"] and e["announce"])
                views = {"chen": (chen, Timeline(start)), "okafor": (okafor, Timeline(start))}
                acked: list[dict] = []

                # 1. Redis up: both directions deliver live.
                for n in range(3):
                    acked.append(timed_send(chen, direct, f"before the outage, chen {n}")[0])
                    acked.append(timed_send(okafor, direct, f"before the outage, okafor {n}")[0])
                for name, (client, view) in views.items():
                    wait_until(lambda c=client, v=view: v.absorb(c, direct) >= acked[-1]["seq"], 5,
                               f"{name} to receive the first messages live")

                # 2. Redis down: sends are acknowledged promptly and stored; live delivery pauses; /readyz says so.
                private_redis.stop()
                for url in (worker_a.url, worker_b.url):
                    status, checks = readiness(url)
                    assert status == 503 and checks["message_queue"] == "failed", (url, status, checks)
                    assert checks["database"] == "ok" and checks["audit_store"] == "ok", checks
                during: list[dict] = []
                slowest = 0.0
                for n in range(4):
                    for client, who in ((chen, "chen"), (okafor, "okafor")):
                        message, elapsed = timed_send(client, direct, f"during the outage, {who} {n}")
                        during.append(message)
                        slowest = max(slowest, elapsed)
                acked.extend(during)
                assert slowest < ACK_BUDGET, f"a send took {slowest:.1f} s to be acknowledged with Redis down"
                assert [m["seq"] for m in during] == list(range(during[0]["seq"], during[0]["seq"] + len(during)))
                time.sleep(0.5)
                live_during = [m for m in okafor.received("message") if m["id"] in {d["id"] for d in during}]
                print(f"outage: slowest ack {slowest:.2f} s; {len(live_during)} of {len(during)} outage messages "
                      "reached worker B's client live")
                # Nothing may come through the queue while it is down (it would mean a second, hidden channel).
                assert not [m for m in live_during if m["sender"]["id"] == ids["dr.chen"]]

                # 3. Redis back: readiness recovers and cross-worker delivery resumes by itself.
                private_redis.start()
                for url in (worker_a.url, worker_b.url):
                    wait_until(lambda u=url: readiness(u)[0] == 200, 10, f"{url}/readyz to recover")
                resumed_at = time.monotonic()

                def delivered_across() -> bool:
                    probe, _ = timed_send(chen, direct, "probe: is delivery back?")
                    acked.append(probe)
                    try:
                        okafor.wait_for("message", lambda e: e["id"] == probe["id"], timeout=0.7)
                        return True
                    except AssertionError:
                        return False

                wait_until(delivered_across, 20, "delivery from worker A to worker B to resume", interval=0)
                wait_until(lambda: (reply := timed_send(okafor, direct, "probe back: and the other way?")[0])
                           and (acked.append(reply) or True)
                           and _received(chen, reply["id"], 0.7), 20, "delivery from worker B to worker A to resume",
                           interval=0)
                print(f"delivery resumed {time.monotonic() - resumed_at:.1f} s after Redis was back")
                for n in range(3):
                    acked.append(timed_send(chen, direct, f"after the outage, chen {n}")[0])
                    acked.append(timed_send(okafor, direct, f"after the outage, okafor {n}")[0])
                last = acked[-1]
                chen.wait_for("message", lambda e: e["id"] == last["id"])
                okafor.wait_for("message", lambda e: e["id"] == last["id"])

                # 4. Each client fills its gaps from the last seq it holds and ends with the whole conversation.
                expected = [m["id"] for m in sorted(acked, key=lambda m: m["seq"])]
                assert len(expected) == len(set(expected))
                assert sorted(m["seq"] for m in acked) == list(range(start + 1, start + 1 + len(acked))), \
                    "every stored message was acknowledged to someone in this test"
                for name, (client, view) in views.items():
                    live_ids = [m["id"] for m in client.received("message") if m.get("conversation_id") == direct]
                    assert len(live_ids) == len(set(live_ids)), f"{name} received a message twice live"
                    for message in acked:
                        if message["sender"]["id"] == ids[f"dr.{name}"]:
                            view.add(message)  # one's own acks are known without delivery
                    rounds = 0
                    while (held := view.absorb(client, direct)) < last["seq"]:
                        page = catch_up(client, direct, held)
                        assert page and page[0]["seq"] == held + 1, (name, held, page[:1])
                        for message in page:
                            view.add(message)
                        rounds += 1
                        assert rounds <= 5
                    timeline = [view.by_seq[s]["id"] for s in range(start + 1, view.contiguous() + 1)]
                    assert timeline == expected, f"{name}'s conversation differs from what was acknowledged"
                    assert rounds >= 1 or name == "okafor", f"{name} never needed history: was Redis really down?"
            finally:
                chen.close()
                okafor.close()


def _received(client: ChatClient, message_id: str, timeout: float) -> bool:
    try:
        client.wait_for("message", lambda e: e["id"] == message_id, timeout=timeout)
        return True
    except AssertionError:
        return False
