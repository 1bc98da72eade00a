"""The SSE decoder."""

from upstream.sse import Event, EventDecoder, encode, parse_data


def decode(text: str) -> list[Event]:
    decoder = EventDecoder()
    events = [decoder.feed(line) for line in text.split("\n")]
    return [e for e in [*events, decoder.flush()] if e is not None]


def test_it_joins_multi_line_data_and_keeps_event_names():
    events = decode('event: delta\ndata: {"a":\ndata: 1}\n\n')
    assert events == [Event('{"a":\n1}', "delta")]
    assert parse_data(events[0]) == {"a": 1}


def test_it_skips_comments_and_blank_runs():
    events = decode(": ping\n\n\ndata: {}\n\n")
    assert events == [Event("{}")]


def test_done_parses_to_none():
    assert parse_data(Event("[DONE]")) is None


def test_it_reads_a_last_event_without_a_blank_line():
    assert decode('data: {"x": 2}') == [Event('{"x": 2}')]


def test_encoding_round_trips():
    wire = encode({"k": "v"}, event="name").decode()
    assert decode(wire) == [Event('{"k":"v"}', "name")]
