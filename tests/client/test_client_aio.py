"""The asyncio client against a real server: same results, errors and cancellation."""

import asyncio

import pytest
from styleserve import AsyncClient, InvalidArgument, Progress, Result, Started

from tests.client.client_helpers import CONTENT_SIZE, LONG_JOB, NEXT_JOB_TIMEOUT, QUICK_JOB


async def test_stylize_returns_the_result(server, content, style):
    async with AsyncClient(server.target, timeout=120) as client:
        result = await client.stylize(content, style, size=48, iterations=3)
        info = await client.info()
    assert isinstance(result, Result)
    assert result.image().size == (48, 48 * CONTENT_SIZE[1] // CONTENT_SIZE[0])
    assert result.receipt.server_version == info.version


async def test_stream_yields_typed_events_in_order(server, content, style):
    async with AsyncClient(server.target, timeout=120) as client:
        events = [e async for e in client.stream(content, style, **QUICK_JOB)]
    kinds = [type(e) for e in events]
    assert Started in kinds and kinds[-1] is Result
    assert kinds.index(Started) < kinds.index(Progress)


async def test_leaving_the_stream_early_frees_the_slot(start_server, content, style):
    with start_server(job_slots=1, queue_size=1) as srv:
        async with AsyncClient(srv.target) as client:
            async for event in client.stream(content, style, **LONG_JOB):
                if isinstance(event, Progress):
                    break
            result = await client.stylize(content, style, timeout=NEXT_JOB_TIMEOUT, **QUICK_JOB)
    assert result.iterations > 0


async def test_cancelling_the_task_cancels_the_job(start_server, content, style):
    running = asyncio.Event()

    async def follow(client: AsyncClient) -> None:
        async for event in client.stream(content, style, **LONG_JOB):
            if isinstance(event, Progress):
                running.set()

    with start_server(job_slots=1, queue_size=1) as srv:
        async with AsyncClient(srv.target) as client:
            task = asyncio.create_task(follow(client))
            await asyncio.wait_for(running.wait(), NEXT_JOB_TIMEOUT)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            result = await client.stylize(content, style, timeout=NEXT_JOB_TIMEOUT, **QUICK_JOB)
    assert result.iterations > 0


async def test_errors_are_the_same_exceptions(server, style):
    async with AsyncClient(server.target, timeout=60) as client:
        with pytest.raises(InvalidArgument, match="content"):
            await client.stylize(b"not a picture", style, **QUICK_JOB)
