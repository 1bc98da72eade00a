"""Splitting an event stream into its events' data, and encoding events."""

import pytest

from upstream.sse import Chunk, EventReader, encode, is_done


def read(*pieces: bytes) -> list[bytes]:
    reader = EventReader()
    events = [data for piece in pieces for data in reader.feed(piece)]
    return events + reader.flush()


def test_it_joins_multi_line_data_and_skips_event_names():
    assert read(b'event: delta\ndata: {"a":\ndata: 1}\n\n') == [b'{"a":\n1}']


def test_it_skips_comments_and_blank_runs():
    assert read(b": ping\n\n\ndata: {}\n\n") == [b"{}"]


def test_an_event_split_across_pieces_comes_out_whole_once_it_ends():
    reader = EventReader()
    assert reader.feed(b'data: {"a"') == []
    assert reader.feed(b": 1}\n") == []
    assert reader.feed(b"\ndata: [DO") == [b'{"a": 1}']
    assert reader.feed(b"NE]\n\n") == [b"[DONE]"]


def test_it_reads_crlf_line_breaks_even_when_a_piece_ends_between_cr_and_lf():
    assert read(b'data: {"x": 1}\r', b"\n\r\ndata: 2\r\n\r\n") == [b'{"x": 1}', b"2"]


def test_it_reads_a_last_event_without_a_blank_line():
    assert read(b'data: {"x": 2}') == [b'{"x": 2}']


def test_done_is_recognised_with_or_without_spaces():
    assert is_done(b"[DONE]") and is_done(b" [DONE] ")
    assert not is_done(b'{"done": true}')


def test_a_chunk_is_parsed_when_asked_and_must_be_an_object():
    chunk = Chunk(b'{"k": "v"}')
    assert chunk.data == {"k": "v"}
    with pytest.raises(ValueError):
        _ = Chunk(b"[1, 2]").data
    with pytest.raises(ValueError):
        _ = Chunk(b"{not json").data


def test_encoding_round_trips():
    assert read(encode({"k": "v"}, event="name")) == [b'{"k":"v"}']
