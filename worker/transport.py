"""The Redis broker transport, made to survive a broker outage.

kombu 5.7 closes the channel of a lost connection after the connection has been torn down; the
channel then tries to hand its unacknowledged messages back through that dead connection and the
whole worker exits ("Unrecoverable error: AttributeError ... 'hostname'"). Those messages are
still in Redis's unacked set, which restores them after the visibility timeout (and beat's scan
re-queues their datasets sooner), so the hand-back can be skipped safely when the connection is
gone. Named in ``celeryconfig.broker_transport``.
"""

from __future__ import annotations

import logging
from typing import Any

from kombu.transport import redis as kombu_redis

log = logging.getLogger(__name__)


class QoS(kombu_redis.QoS):  # type: ignore[misc]
    def restore_unacked(self, client: Any = None) -> None:
        try:
            super().restore_unacked(client)
        except AttributeError:  # the broker connection is already gone (see the module docstring)
            log.warning(
                "broker connection lost: %d unacknowledged message(s) left to Redis's restore", len(self._delivered)
            )
            self._delivered.clear()


class Channel(kombu_redis.Channel):  # type: ignore[misc]
    QoS = QoS


class Transport(kombu_redis.Transport):  # type: ignore[misc]
    Channel = Channel
