"""Request bodies are parsed off the event loop when parsing them takes long."""

from __future__ import annotations

import threading
from typing import Any, cast

import pytest
from aiohttp import web

import scheduler.api.common as api_common
from scheduler.api.common import INLINE_JSON_BYTES, read_documents
from scheduler.api.errors import BadRequest
from scheduler.api.patch import MERGE, read_patch


class _Request:
    """What read_documents reads of a request: its content type and body."""

    def __init__(self, body: bytes, content_type: str) -> None:
        self.body, self.content_type = body, content_type

    async def read(self) -> bytes:
        return self.body


async def _parsed_on(
    monkeypatch: pytest.MonkeyPatch, body: bytes, content_type: str
) -> tuple[list[Any], threading.Thread]:
    """The documents read_documents makes of `body`, and the thread that parsed them."""
    threads: list[threading.Thread] = []
    parse = api_common.parse_documents

    def recording(*args: Any, **kwargs: Any) -> list[Any]:
        threads.append(threading.current_thread())
        return parse(*args, **kwargs)

    monkeypatch.setattr(api_common, "parse_documents", recording)
    docs = await read_documents(cast(web.Request, _Request(body, content_type)))
    assert len(threads) == 1
    return docs, threads[0]


async def test_yaml_is_parsed_in_a_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """PyYAML is pure Python (about 2 ms a KiB): on the loop, a 1.3 MiB body stalled
    every request and agent link of the scheduler for 2.7 s."""
    body = b"apiVersion: v1\nkind: Pod\nmetadata:\n  name: a\n"
    docs, thread = await _parsed_on(monkeypatch, body, "application/yaml")
    assert docs == [{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a"}}]
    assert thread is not threading.current_thread()


async def test_small_json_is_parsed_inline_and_big_json_in_a_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    small = b'{"kind": "Pod", "metadata": {"name": "a"}}'
    docs, thread = await _parsed_on(monkeypatch, small, "application/json")
    assert docs == [{"kind": "Pod", "metadata": {"name": "a"}}]
    assert thread is threading.current_thread()  # a thread hop costs more than this
    big = b'{"kind": "Pod", "data": "' + b"x" * INLINE_JSON_BYTES + b'"}'
    docs, thread = await _parsed_on(monkeypatch, big, "application/json")
    assert docs[0]["kind"] == "Pod"
    assert thread is not threading.current_thread()


async def test_a_malformed_body_is_still_a_400() -> None:
    request = cast(web.Request, _Request(b"a: [1, 2\n", "application/yaml"))
    with pytest.raises(BadRequest, match="malformed YAML"):
        await read_documents(request)


async def test_a_big_patch_is_parsed_in_a_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    import scheduler.api.patch as api_patch

    threads: list[threading.Thread] = []
    parse = api_patch.parse_documents

    def recording(*args: Any, **kwargs: Any) -> list[Any]:
        threads.append(threading.current_thread())
        return parse(*args, **kwargs)

    monkeypatch.setattr(api_patch, "parse_documents", recording)
    for size in (10, INLINE_JSON_BYTES):
        body = b'{"metadata": {"labels": {"a": "' + b"x" * size + b'"}}}'
        patch = await read_patch(cast(web.Request, _Request(body, MERGE)))
        assert len(patch.body["metadata"]["labels"]["a"]) == size
    assert threads[0] is threading.current_thread()
    assert threads[1] is not threading.current_thread()
