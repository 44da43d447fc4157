"""Topic names, filters and matching: the MQTT 3.1.1 / 5 spec's examples (§4.7), and the trie."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.bus import TopicError, TopicTrie, matches, validate_filter, validate_name

SPEC_CASES = [
    # §4.7.1.2 multi-level wildcard
    ("sport/tennis/player1/#", "sport/tennis/player1", True),
    ("sport/tennis/player1/#", "sport/tennis/player1/ranking", True),
    ("sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon", True),
    ("sport/#", "sport", True),
    ("#", "sport/tennis", True),
    ("#", "/", True),
    # §4.7.1.3 single-level wildcard
    ("sport/tennis/+", "sport/tennis/player1", True),
    ("sport/tennis/+", "sport/tennis/player2", True),
    ("sport/tennis/+", "sport/tennis/player1/ranking", False),
    ("sport/+", "sport", False),
    ("sport/+", "sport/", True),
    ("+/+", "/finance", True),
    ("/+", "/finance", True),
    ("+", "/finance", False),
    ("+/tennis/#", "sport/tennis/player1", True),
    ("sport/+/player1", "sport/tennis/player1", True),
    ("sport/+/player1", "sport/tennis/player2", False),
    # §4.7.2 topics beginning with $
    ("#", "$SYS/broker/clients", False),
    ("+/monitor/Clients", "$SYS/monitor/Clients", False),
    ("$SYS/#", "$SYS/monitor/Clients", True),
    ("$SYS/monitor/+", "$SYS/monitor/Clients", True),
    ("$events/#", "$events/client_connected", True),
    ("$events/client_connected", "$events/client_connected", True),
    # §4.7.3 case sensitive, exact levels
    ("ACCOUNTS", "Accounts", False),
    ("ocpp/cs/CP1", "ocpp/cs/CP1", True),
    ("ocpp/cs/CP1", "ocpp/cs/CP10", False),
    ("ocpp/cp/+", "ocpp/cp/CP1/Reply", False),
    ("ocpp/cp/+/Reply", "ocpp/cp/CP1/Reply", True),
]


@pytest.mark.parametrize("topic_filter,topic,expected", SPEC_CASES)
def test_spec_examples_direct_matcher(topic_filter, topic, expected):
    assert matches(topic_filter, topic) is expected


@pytest.mark.parametrize("topic_filter,topic,expected", SPEC_CASES)
def test_spec_examples_trie(topic_filter, topic, expected):
    trie: TopicTrie[str] = TopicTrie()
    trie.add(topic_filter, "x")
    assert (trie.match(topic) == ("x",)) is expected


@pytest.mark.parametrize("topic_filter", ["#", "+", "sport/tennis/#", "+/tennis/#", "sport/+/player1", "/", "a//b", "$SYS/#"])
def test_valid_filters(topic_filter):
    validate_filter(topic_filter)


@pytest.mark.parametrize(
    "topic_filter,message",
    [
        ("sport/tennis#", "# must be a whole level"),
        ("sport/tennis/#/ranking", "# must be a whole level and the last one"),
        ("sport+", r"\+ must be a whole level"),
        ("", "cannot be empty"),
        ("a/\0", "NUL"),
        ("a" * 70000, "at most 65535 bytes"),
    ],
)
def test_invalid_filters(topic_filter, message):
    with pytest.raises(TopicError, match=message):
        validate_filter(topic_filter)


@pytest.mark.parametrize("topic", ["a/+", "#", "a/#/b", ""])
def test_topic_names_take_no_wildcards(topic):
    with pytest.raises(TopicError):
        validate_name(topic)


def test_trie_returns_every_matching_subscription_once():
    trie: TopicTrie[str] = TopicTrie()
    for f in ["ocpp/cp/CP1", "ocpp/cp/+", "ocpp/#", "#", "+/+/CP1", "ocpp/cs/+"]:
        trie.add(f, f)
    assert sorted(trie.match("ocpp/cp/CP1")) == sorted(["ocpp/cp/CP1", "ocpp/cp/+", "ocpp/#", "#", "+/+/CP1"])
    assert trie.match("$events/x") == ()


def test_trie_remove_prunes_and_keeps_others():
    trie: TopicTrie[int] = TopicTrie()
    trie.add("a/+/c", 1)
    trie.add("a/+/c", 2)
    trie.add("a/b", 3)
    assert trie.remove("a/+/c", 1)
    assert not trie.remove("a/+/c", 1)
    assert not trie.remove("x/+", 1)
    assert trie.match("a/x/c") == (2,)
    assert trie.remove("a/+/c", 2)
    assert trie.remove("a/b", 3)
    assert len(trie) == 0
    assert trie.match("a/x/c") == () and trie.match("a/b") == ()
    assert list(trie.filters()) == []


def test_trie_lists_its_filters():
    trie: TopicTrie[int] = TopicTrie()
    for i, f in enumerate(["a/b", "a/+", "#", "a/+/c"]):
        trie.add(f, i)
    assert sorted(trie.filters()) == sorted(["a/b", "a/+", "#", "a/+/c"])


level = st.sampled_from(["a", "b", "c", "", "$x", "ocpp"])
topic_st = st.lists(level, min_size=1, max_size=5).map("/".join).filter(bool)
filter_level = st.sampled_from(["a", "b", "c", "", "$x", "+", "ocpp"])
filter_st = st.builds(
    lambda levels, tail: "/".join(levels + (["#"] if tail else [])) or "#",
    st.lists(filter_level, min_size=0, max_size=5),
    st.booleans(),
)


@settings(max_examples=400, deadline=None)
@given(filters=st.lists(filter_st, min_size=1, max_size=12), topics=st.lists(topic_st, min_size=1, max_size=8))
def test_trie_agrees_with_direct_matcher(filters, topics):
    trie: TopicTrie[int] = TopicTrie()
    for i, f in enumerate(filters):
        validate_filter(f)
        trie.add(f, i)
    for topic in topics:
        expected = sorted(i for i, f in enumerate(filters) if matches(f, topic))
        assert sorted(trie.match(topic)) == expected, topic
        assert trie.has_match(topic) is bool(expected), topic
    # removing half keeps the rest exact
    for i, f in enumerate(filters):
        if i % 2 == 0:
            assert trie.remove(f, i)
    for topic in topics:
        expected = sorted(i for i, f in enumerate(filters) if i % 2 and matches(f, topic))
        assert sorted(trie.match(topic)) == expected, topic
        assert trie.has_match(topic) is bool(expected), topic
    # the walk's results are kept per topic: adding filters back must be seen at once
    for i, f in enumerate(filters):
        if i % 2 == 0:
            trie.add(f, i)
    for topic in topics:
        expected = sorted(i for i, f in enumerate(filters) if matches(f, topic))
        assert sorted(trie.match(topic)) == expected, topic


def test_trie_match_results_stay_as_they_were_while_filters_change():
    trie: TopicTrie[str] = TopicTrie()
    trie.add("a/+", "wild")
    trie.add("a/b", "exact")
    first = trie.match("a/b")
    assert first == ("exact", "wild")
    trie.add("a/b", "exact2")  # a handler subscribing while the bus goes through `first`
    trie.remove("a/b", "exact")
    trie.remove("a/+", "wild")
    assert first == ("exact", "wild")
    assert trie.match("a/b") == ("exact2",)
    assert trie.match("a/c") == ()


@pytest.mark.parametrize("char", ["\x01", "\ud800", "\udfff", "\x1f", "\x7f", "\x85", "\x9f", "\ufdd0", "\ufdef", "\ufffe", "\uffff",
                                  "\U0001fffe", "\U0010ffff"])
def test_control_characters_and_non_characters_are_refused(char):
    # mosquitto drops the connection of a client publishing such a topic (and the MQTT 5 spec lets it)
    for check in (validate_name, validate_filter):
        with pytest.raises(TopicError, match=f"U\\+{ord(char):04X}"):
            check(f"ocpp/cp/a{char}b")


@pytest.mark.parametrize("topic", ["ocpp/cp/a b", "ocpp/cp/\u00e9\u00a0\u200b", "ocpp/cp/\U0001f600", "ocpp/\ufdcf/\ufdf0"])
def test_other_unicode_is_fine_in_a_topic(topic):
    validate_name(topic)
    validate_filter(topic)
