"""Broker queue depth for /metrics: messages waiting in the scoring, delivery and training queues.

Read from the broker itself at scrape time, as kombu stores them: with Redis, one list per queue and priority
step (``LLEN scoring``, ``scoring\\x06\\x163``, ...); with the filesystem broker, one file per message
(``<time>_<uuid>.<queue>.msg``) in its folder. A message a worker has taken and not yet acknowledged is no
longer waiting and is not counted. A queue that grows while the workers are up means too few workers.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from functools import lru_cache

import redis
from kombu.transport.redis import PRIORITY_STEPS, Channel
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from app.core.broker import DELIVERY_QUEUE, SCORING_QUEUE, TRAINING_QUEUE, filesystem_folder
from app.core.config import Settings

QUEUES = (SCORING_QUEUE, DELIVERY_QUEUE, TRAINING_QUEUE)
TIMEOUT_S = 2.0  # a scrape must answer even when the broker does not


def redis_keys(queue: str) -> list[str]:
    """The lists kombu keeps one queue in: the queue's name, and one per non-zero priority step."""
    return [queue, *(f"{queue}{Channel.sep}{step}" for step in PRIORITY_STEPS if step)]


@lru_cache(maxsize=4)
def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=TIMEOUT_S, socket_connect_timeout=TIMEOUT_S)


def queue_depths(settings: Settings) -> dict[str, int]:
    """Messages waiting per queue (raises the broker's error when it cannot be read)."""
    if settings.broker_url.startswith("filesystem://"):
        wanted = {f"{queue}.msg": queue for queue in QUEUES}
        depths = dict.fromkeys(QUEUES, 0)
        folder = filesystem_folder(settings) / "queue"
        for name in os.listdir(folder) if folder.is_dir() else []:  # made by the first publish
            queue = wanted.get(name.partition(".")[2])
            if queue is not None:
                depths[queue] += 1
        return depths
    pipe = _client(settings.broker_url).pipeline(transaction=False)
    for queue in QUEUES:
        for key in redis_keys(queue):
            pipe.llen(key)
    lengths = iter(pipe.execute())
    return {queue: sum(int(next(lengths)) for _ in redis_keys(queue)) for queue in QUEUES}


class BrokerCollector(Collector):
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def collect(self) -> Iterator[Metric]:
        try:
            depths = queue_depths(self.settings)
        except (redis.RedisError, OSError):  # the scrape still answers, and says the broker did not
            depths = None
        yield GaugeMetricFamily("gatekeeper_broker_up", "1 when the scrape could read the broker's queues",
                                value=0.0 if depths is None else 1.0)  # fmt: skip
        if depths is not None:
            waiting = GaugeMetricFamily("gatekeeper_broker_queue_messages",
                                        "Messages waiting in a Celery queue (not yet taken by a worker)",
                                        labels=["queue"])  # fmt: skip
            for queue, count in depths.items():
                waiting.add_metric([queue], float(count))
            yield waiting
