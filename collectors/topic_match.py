"""AMQP topic binding keys matched against routing keys in linear time.

Split from the RabbitMQ collector: the matcher is pure and has its own worst cases to reason about.
"""

from __future__ import annotations

# AMQP carries routing and binding keys as short strings: 255 bytes is what a client can publish or
# bind with. Longer keys (the HTTP API accepts them) are not topic-matched: refused and counted.
MAX_TOPIC_KEY_BYTES = 255


class TopicPattern:
    """An AMQP topic binding key (`*` one word, `#` zero or more) compiled for a linear match: the set of
    pattern positions reachable after each routing-key word is a bit mask, so a match costs one step per
    key word (O(pattern x key) at worst), never the exponential backtracking `#.#.#...` provokes."""

    __slots__ = ("advance", "final", "hash_mask", "star_mask", "start")

    def __init__(self, pattern: str):
        words: list[str] = []
        for w in pattern.split(".") if pattern else []:
            if not (w == "#" and words and words[-1] == "#"):  # `#.#` matches exactly what `#` matches
                words.append(w)
        self.hash_mask = self.star_mask = 0
        self.advance: dict[str, int] = {}  # literal word -> positions that word lets pass
        for i, w in enumerate(words):
            if w == "#":
                self.hash_mask |= 1 << i
            elif w == "*":
                self.star_mask |= 1 << i
            else:
                self.advance[w] = self.advance.get(w, 0) | 1 << i
        self.final = 1 << len(words)
        self.start = self._closure(1)

    def _closure(self, states: int) -> int:
        # A `#` may match no word: its position reaches the next one (no two `#` are adjacent).
        return states | ((states & self.hash_mask) << 1)

    def matches(self, key_words: list[str]) -> bool:
        states = self.start
        for w in key_words:
            states = self._closure(
                (states & self.hash_mask) | ((states & (self.star_mask | self.advance.get(w, 0))) << 1)
            )
            if not states:
                return False
        return bool(states & self.final)


def topic_words(key: str) -> list[str]:
    """Words of a routing key as RabbitMQ splits them: "" has none, "a." has two ("a" and "")."""
    return key.split(".") if key else []


def is_wildcard(binding_key: str) -> bool:
    return any(w in ("*", "#") for w in topic_words(binding_key))
