"""The Redis broker transport, made to survive a broker outage.

After a lost connection kombu 5.7 tears the connection down first and then still uses its old
channel: to hand unacknowledged messages back, or to acknowledge a task that just finished. The
channel then finds no connection and the whole worker exits ("Unrecoverable error: AttributeError
... 'hostname'" or "... 'client'"). Here that case is the connection error it really is, which
kombu and Celery already handle: the messages stay in Redis's unacked set and come back after the
visibility timeout (beat's scan re-queues their datasets sooner). Named in
``celeryconfig.broker_transport``.

Its QoS also forgets which worker held a message (``worker.held``) in the same transaction that
acknowledges, rejects or restores it, so no worker has to look for its acknowledged messages.
"""

from __future__ import annotations

from typing import Any

import redis
from kombu.transport import redis as kombu_redis

from worker import held


class QoS(kombu_redis.QoS):
    def _remove_from_indices(self, delivery_tag: str, pipe: Any = None) -> Any:
        """kombu's removal from ``unacked`` (every ack, reject and restore), with the message's holder."""
        removal = super()._remove_from_indices(delivery_tag, pipe)  # type: ignore[no-untyped-call]
        return removal.hdel(held.HELD, delivery_tag)


class Channel(kombu_redis.Channel):
    QoS = QoS

    def _connparams(self, asynchronous: bool = False) -> Any:
        if self.connection is None or self.connection.client is None:
            raise redis.exceptions.ConnectionError("the broker connection was closed after an outage")
        return super()._connparams(asynchronous=asynchronous)  # type: ignore[no-untyped-call]


class Transport(kombu_redis.Transport):
    Channel = Channel
