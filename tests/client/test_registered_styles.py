"""Registered styles through the SDK: a style_id registered once works on every replica behind
a round-robin client, because the client registers its kept pictures again where a replica
answers NOT_FOUND and sends the job with them; an id the client never registered fails."""

from __future__ import annotations

import contextlib

import pytest
from PIL import Image
from styleserve import AsyncClient, Client, NotFound

JOB = {"size": 32, "iterations": 2, "seed": 7}


def _requests(srv, code: str) -> float:
    registry = srv.server.metrics.registry
    labels = {"method": "StyleTransfer", "code": code}
    return registry.get_sample_value("styleserve_requests_total", labels) or 0.0


@pytest.fixture
def two_servers(start_server):
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(start_server()) for _ in range(2)]


def _balanced(servers) -> str:
    return "ipv4:" + ",".join(f"127.0.0.1:{s.port}" for s in servers)


def test_a_style_registered_once_works_on_both_replicas(two_servers, content, style):
    with Client(_balanced(two_servers), load_balancing="round_robin", timeout=120) as client:
        style_id = client.register_style(style, size=32)
        results = [client.stylize(content, style_id=style_id, **JOB) for _ in range(4)]
    with Client(f"127.0.0.1:{two_servers[0].port}") as direct:
        reference = direct.stylize(content, style, **JOB)
    for result in results:
        assert result.image().tobytes() == reference.image().tobytes()
    # Both replicas ran jobs, and the one that did not hold the style said so first.
    assert all(_requests(srv, "OK") >= 1 for srv in two_servers)
    assert sum(_requests(srv, "NOT_FOUND") for srv in two_servers) >= 1


async def test_the_async_client_registers_again_too(two_servers, content, style):
    async with AsyncClient(_balanced(two_servers), load_balancing="round_robin") as client:
        style_id = await client.register_style(style, size=32)
        results = [await client.stylize(content, style_id=style_id, **JOB) for _ in range(4)]
    assert len({r.image().tobytes() for r in results}) == 1
    assert sum(_requests(srv, "NOT_FOUND") for srv in two_servers) >= 1


def test_an_id_this_client_never_registered_is_not_found(server, content, style):
    with Client(server.target) as registering:
        style_id = registering.register_style(style, size=32)
    # The style is held there: a client that did not register it may still name it.
    with Client(server.target) as other:
        assert isinstance(other.stylize(content, style_id=style_id, **JOB).image(), Image.Image)
        unknown = "sty_" + "0" * 64
        with pytest.raises(NotFound, match="register"):
            other.stylize(content, style_id=unknown, **JOB)
