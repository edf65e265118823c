"""A worker SIGKILLed mid-conversation: its client moves to the other worker and catches up exactly.

Two workers share the test Redis. dr.chen chats on worker A while dr.okafor is on worker B; A is
killed while dr.chen has a send in flight. The client then does what the browser does when its
connection drops behind a load balancer: connects to B with the same session cookie, retries the
unanswered send with the same idempotency key, and asks ``history`` after the last sequence number
it holds. It must end with every acknowledged message exactly once, in order, with no gap.
"""
from __future__ import annotations

import threading
import time
import uuid

import pytest
import socketio

from tests.support.chat import ChatClient, Timeline, catch_up, direct_chat_across_workers
from tests.support.portal_server import another_worker, running_portal

pytestmark = [pytest.mark.redis, pytest.mark.slow]


def test_killed_worker_client_catches_up_on_the_other(tmp_path, redis_url):
    with running_portal(tmp_path, f"sqlite:///{tmp_path / 'portal.db'}", patients=4,
                        PORTAL_MESSAGE_QUEUE=redis_url) as worker_a:
        with another_worker(worker_a) as worker_b, \
                direct_chat_across_workers(worker_a, worker_b) as (ids, direct, chen, okafor):
            clients = [chen, okafor]
            try:
                start = chen.call("join", {"conversation_id": direct})["last_seq"]
                assert okafor.call("join", {"conversation_id": direct})["ok"]
                chen.wait_for("presence", lambda e: e["user"]["id"] == ids["dr.okafor"] and e["announce"])
                seen = Timeline(start)
                acked: list[dict] = []

                # Mid-conversation: both talk, each hears the other across the workers.
                for n in range(4):
                    ack = chen.send(direct, f"chen before the crash {n}")
                    assert ack["ok"], ack
                    acked.append(ack["message"])
                    seen.add(ack["message"])
                    reply = okafor.send(direct, f"okafor before the crash {n}")
                    assert reply["ok"], reply
                    acked.append(reply["message"])
                okafor.wait_for("message", lambda e: e["sender"]["id"] == ids["dr.chen"], count=4)
                deadline = time.monotonic() + 5
                while seen.absorb(chen, direct) < acked[-1]["seq"] and time.monotonic() < deadline:
                    time.sleep(0.05)
                assert seen.contiguous() == acked[-1]["seq"], "live delivery across workers before the crash"

                # dr.chen keeps sending; worker A is killed with one send unanswered.
                unanswered: dict[str, str] = {}
                stop = threading.Event()

                def keep_sending() -> None:
                    n = 0
                    while not stop.is_set():
                        key, body = uuid.uuid4().hex, f"chen racing the crash {n}"
                        try:
                            ack = chen.call("send", {"conversation_id": direct, "body": body, "idempotency_key": key},
                                            timeout=2)
                        except (socketio.exceptions.TimeoutError, socketio.exceptions.BadNamespaceError,
                                socketio.exceptions.SocketIOError):
                            unanswered.update(key=key, body=body)
                            return
                        assert ack["ok"], ack
                        acked.append(ack["message"])
                        seen.add(ack["message"])
                        n += 1

                sender = threading.Thread(target=keep_sending)
                sender.start()
                time.sleep(0.6)
                worker_a.kill()
                assert worker_a.process.returncode == -9
                sender.join(timeout=10)
                assert not sender.is_alive()
                racing = [m for m in acked if m["body"].startswith("chen racing")]
                assert racing, "worker A acknowledged sends before the kill"

                # While dr.chen is away, dr.okafor (on B) goes on talking.
                for n in range(3):
                    reply = okafor.send(direct, f"okafor while chen reconnects {n}")
                    assert reply["ok"], reply
                    acked.append(reply["message"])

                # The load balancer sends dr.chen's reconnect to worker B, same cookie.
                seen.absorb(chen, direct)  # whatever reached the old connection before it died
                chen.close()
                chen = ChatClient(worker_b.url, chen.session, origin=worker_a.url).connect()
                clients.append(chen)
                rejoined = chen.call("join", {"conversation_id": direct})
                assert rejoined["ok"], rejoined
                if unanswered:  # the outcome of the send in flight is unknown: retry it with the same key
                    retry = chen.send(direct, unanswered["body"], unanswered["key"])
                    assert retry["ok"], retry
                    acked.append(retry["message"])
                    seen.add(retry["message"])
                held = seen.absorb(chen, direct)
                print(f"acked by A before the kill: {len(racing)} racing sends; unanswered: {bool(unanswered)}; "
                      f"holding up to seq {held}, conversation at {rejoined['last_seq']}")
                caught_up = catch_up(chen, direct, held)
                for message in caught_up:
                    seen.add(message)

                after = chen.send(direct, "chen back, on worker B")  # live again, on the new worker
                assert after["ok"], after
                acked.append(after["message"])
                okafor.wait_for("message", lambda e: e["id"] == after["message"]["id"])

                everything = catch_up(okafor, direct, start)  # the stored truth, read through B
                stored_ids = [m["id"] for m in everything]
                assert len(stored_ids) == len(set(stored_ids)), "a message was stored twice"
                assert [m["seq"] for m in everything] == list(range(start + 1, start + 1 + len(everything))), \
                    "gap in the stored sequence"
                acked_ids = {m["id"] for m in acked}
                assert acked_ids <= set(stored_ids), f"acknowledged but lost: {acked_ids - set(stored_ids)}"
                if unanswered:
                    assert [m["idempotency_key"] for m in everything].count(unanswered["key"]) == 1

                # dr.chen's view: the messages held before the reconnect plus the catch-up page, no overlap,
                # no gap, exactly the stored conversation up to the catch-up.
                caught_seqs = [m["seq"] for m in caught_up]
                assert caught_seqs == list(range(held + 1, held + 1 + len(caught_up))), caught_seqs
                chen.wait_for("message", lambda e: e["id"] == after["message"]["id"])
                seen.absorb(chen, direct)
                final = [seen.by_seq[s]["id"] for s in range(start + 1, seen.contiguous() + 1)]
                assert final == stored_ids, "dr.chen's timeline differs from the stored conversation"
                assert len(chen.received("message", lambda e: e["id"] == after["message"]["id"])) == 1
            finally:
                for client in clients:
                    client.close()
