"""A response's head and body go out in one write (ingress/one_write.py), with the same bytes
uvicorn's own cycle writes in two."""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any

from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

from ingress.one_write import OneWriteCycle


class RecordingTransport:
    """What a cycle wrote, write by write."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def _cycle(kind: type[RequestResponseCycle], *, keep_alive: bool = True, expect_100: bool = False):
    transport = RecordingTransport()
    cycle = kind(
        scope={"type": "http", "method": "POST", "path": "/webhooks/github", "headers": []},
        transport=transport,  # type: ignore[arg-type]
        flow=FlowControl(transport),  # type: ignore[arg-type]
        logger=logging.getLogger("test"),
        access_logger=logging.getLogger("test.access"),
        access_log=False,
        default_headers=[(b"server", b"uvicorn")],
        message_event=asyncio.Event(),
        expect_100_continue=expect_100,
        keep_alive=keep_alive,
        on_response=lambda: None,
    )
    return cycle, transport


START: dict[str, Any] = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-length", b"2"), (b"content-type", b"application/json")],
}
BODY: dict[str, Any] = {"type": "http.response.body", "body": b"{}"}


def test_an_answer_is_one_write_of_the_bytes_uvicorn_writes_in_two():
    asyncio.run(_an_answer_is_one_write_of_the_bytes_uvicorn_writes_in_two())


async def _an_answer_is_one_write_of_the_bytes_uvicorn_writes_in_two():
    ours, ours_sent = _cycle(OneWriteCycle)
    theirs, theirs_sent = _cycle(RequestResponseCycle)
    for cycle in (ours, theirs):
        await cycle.send(START)
        await cycle.send(BODY)

    assert len(theirs_sent.writes) == 2
    assert ours_sent.writes == [b"".join(theirs_sent.writes)]
    assert ours.response_complete


def test_a_streamed_body_sends_the_head_with_its_first_chunk():
    asyncio.run(_a_streamed_body_sends_the_head_with_its_first_chunk())


async def _a_streamed_body_sends_the_head_with_its_first_chunk():
    cycle, sent = _cycle(OneWriteCycle)
    start = {"type": "http.response.start", "status": 200, "headers": []}  # chunked
    await cycle.send(start)
    await cycle.send({"type": "http.response.body", "body": b"ab", "more_body": True})
    await cycle.send({"type": "http.response.body", "body": b"c"})

    assert len(sent.writes) == 2
    assert sent.writes[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert sent.writes[0].endswith(b"\r\n\r\n2\r\nab\r\n")
    assert sent.writes[1] == b"1\r\nc\r\n0\r\n\r\n"


def test_nothing_is_held_back_from_a_head_the_app_never_follows_with_a_body():
    asyncio.run(_nothing_is_held_back_from_a_head_the_app_never_follows_with_a_body())


async def _nothing_is_held_back_from_a_head_the_app_never_follows_with_a_body():
    cycle, sent = _cycle(OneWriteCycle)
    await cycle.send(START)

    assert sent.writes == []  # uvicorn closes such a connection: no half answer goes out


def test_a_closing_answer_still_closes_its_connection():
    asyncio.run(_a_closing_answer_still_closes_its_connection())


async def _a_closing_answer_still_closes_its_connection():
    cycle, sent = _cycle(OneWriteCycle, keep_alive=False)
    await cycle.send(START)
    await cycle.send(BODY)

    assert len(sent.writes) == 1 and b"connection: close" in sent.writes[0]
    assert sent.closed


def test_a_100_continue_goes_out_at_once_while_the_app_reads():
    asyncio.run(_a_100_continue_goes_out_at_once_while_the_app_reads())


async def _a_100_continue_goes_out_at_once_while_the_app_reads():
    cycle, sent = _cycle(OneWriteCycle, expect_100=True)
    cycle.more_body = False
    cycle.message_event.set()
    await cycle.receive()

    assert sent.writes == [b"HTTP/1.1 100 Continue\r\n\r\n"]


def test_an_answer_in_one_call_is_the_write_of_uvicorns_two_messages():
    asyncio.run(_an_answer_in_one_call_is_the_write_of_uvicorns_two_messages())


async def _an_answer_in_one_call_is_the_write_of_uvicorns_two_messages():
    for keep_alive in (True, False):
        ours, ours_sent = _cycle(OneWriteCycle, keep_alive=keep_alive)
        theirs, theirs_sent = _cycle(RequestResponseCycle, keep_alive=keep_alive)
        responses: list[str] = []
        ours.on_response = functools.partial(responses.append, "ours")
        theirs.on_response = functools.partial(responses.append, "theirs")
        await ours.answer(200, b"application/json", b"{}")
        await theirs.send(START)
        await theirs.send(BODY)

        assert ours_sent.writes == [b"".join(theirs_sent.writes)]
        assert ours_sent.closed is theirs_sent.closed is (not keep_alive)
        assert responses == ["ours", "theirs"]
        for cycle in (ours, theirs):
            assert cycle.response_started and cycle.response_complete
            assert cycle.message_event.is_set()


def test_a_second_answer_is_refused_as_uvicorn_refuses_it():
    asyncio.run(_a_second_answer_is_refused_as_uvicorn_refuses_it())


async def _a_second_answer_is_refused_as_uvicorn_refuses_it():
    cycle, sent = _cycle(OneWriteCycle)
    await cycle.answer(200, b"application/json", b"{}")
    try:
        await cycle.answer(500, b"application/json", b"{}")
    except RuntimeError:
        pass
    else:
        raise AssertionError("a second answer went out")
    assert len(sent.writes) == 1
