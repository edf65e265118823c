"""The Socket.IO message queue (Redis) kept off the chat events' critical path.

Flask-SocketIO's stock ``RedisManager`` publishes every room emit from inside the event handler, on a
Redis connection with no socket timeout. A Redis that is down answers at once (connection refused),
but a *hung* one (paused VM, stuck fork, network black hole) blocks the handler, so a ``send`` whose
message is already committed never gets its ack, on every worker, for as long as Redis hangs
(tests/faults/test_redis_outage.py measures both).

Here the handler only queues the publication; one publisher greenlet per worker publishes in order,
with short timeouts and no hidden retries (``RedisManager._publish`` already retries once on a fresh
connection). Local clients are still served at once (PubSubManager delivers to this worker before
publishing). A Redis outage therefore costs live delivery between workers only, which clients recover
with ``history``; a long one fills the outbox, after which the oldest pending publications are dropped
(logged), never the acks.
"""
from __future__ import annotations

import contextlib
import logging
import time

import redis
import socketio
from redis.backoff import NoBackoff
from redis.retry import Retry

log = logging.getLogger(__name__)

PUBLISH_TIMEOUT = 1.0  # seconds to connect to or hear back from Redis when publishing
OUTBOX_LIMIT = 10_000  # pending publications kept while Redis is unreachable


class RedisQueue(socketio.RedisManager):
    """``socketio.RedisManager`` that publishes from a background greenlet with timeouts."""

    def initialize(self) -> None:
        super().initialize()
        self._outbox = self.server.eio.create_queue()
        self._dropped = 0
        self.server.start_background_task(self._drain)

    def _redis_connect(self) -> None:
        options = dict(self.redis_options)
        # Publisher: fail fast instead of hanging; RedisManager._publish reconnects and retries once.
        self.redis = redis.Redis.from_url(self.redis_url, socket_timeout=PUBLISH_TIMEOUT,
                                          socket_connect_timeout=PUBLISH_TIMEOUT, retry=Retry(NoBackoff(), 0),
                                          **options)
        # Listener: waits for messages indefinitely (a read timeout would drop the subscription whenever the
        # cluster is quiet), but connects with a timeout and lets TCP keep-alive notice a vanished peer.
        listener = redis.Redis.from_url(self.redis_url, socket_connect_timeout=PUBLISH_TIMEOUT,
                                        socket_keepalive=True, **options)
        self.pubsub = listener.pubsub(ignore_subscribe_messages=True)
        self.connected = True

    def _publish(self, data) -> None:
        outbox = getattr(self, "_outbox", None)
        if outbox is None:  # not initialised (write-only use): publish directly
            super()._publish(data)
            return
        if outbox.qsize() >= OUTBOX_LIMIT:
            with contextlib.suppress(Exception):  # emptied meanwhile by the publisher: nothing to drop
                outbox.get_nowait()
            self._dropped += 1
            if self._dropped == 1 or self._dropped % 1000 == 0:
                log.error("message queue outbox full; dropping the oldest publications",
                          extra={"event": "queue_overflow"})
        outbox.put(data)

    def _drain(self) -> None:
        while True:
            data = self._outbox.get()
            try:
                super()._publish(data)
            except Exception:  # noqa: BLE001 - the publisher must outlive any single failure
                log.exception("message queue publish failed", extra={"event": "queue_publish"})

    def flush(self, timeout: float) -> bool:
        """Wait (bounded) until the outbox is published, e.g. before a graceful shutdown; True when empty."""
        outbox = getattr(self, "_outbox", None)
        deadline = time.monotonic() + timeout
        while outbox is not None and not outbox.empty() and time.monotonic() < deadline:
            self.server.sleep(0.05)
        return outbox is None or outbox.empty()
