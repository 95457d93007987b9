"""The invalidation bus on Redis pub/sub (``edgecache.bus.redis``): a subscriber that survives outages and
silent connections, and the publishing helpers. Message formats and their validation live in
``edgecache.core.invalidation``. Importing this package connects to nothing."""

from edgecache.bus.redis import (
    DeadConnection,
    InvalidationSubscriber,
    publish_event,
    publish_invalidation,
    publisher_client,
    pubsub_client_factory,
    shard_owner_factory,
)

__all__ = [
    "DeadConnection",
    "InvalidationSubscriber",
    "publish_event",
    "publish_invalidation",
    "publisher_client",
    "pubsub_client_factory",
    "shard_owner_factory",
]
