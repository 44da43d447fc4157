"""The in-process message space: topic trie, MQTT wildcard matching, messages."""

from engine.bus.bus import Bus, Subscription
from engine.bus.message import Message
from engine.bus.topic import TopicError, matches, validate_filter, validate_name
from engine.bus.trie import TopicTrie

__all__ = ["Bus", "Message", "Subscription", "TopicError", "TopicTrie", "matches", "validate_filter", "validate_name"]
