"""Durable queues: items kept on disk (SQLite) until their owner acknowledges them."""

from engine.durable.queue import DROP_NEWEST, DROP_OLDEST, DurableError, DurableQueue, queue_path

__all__ = ["DROP_NEWEST", "DROP_OLDEST", "DurableError", "DurableQueue", "queue_path"]
