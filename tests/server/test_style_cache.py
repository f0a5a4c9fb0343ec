"""Registered styles over a real loopback server: RegisterStyle, jobs naming a style_id or
sending the same pictures again, the cache's byte bound and LRU eviction, and every refusal.

The calls go through the generated stub (RegisterStyle is not in the client library yet).
Jobs are the tiny network's FAST ones in float32 with a fixed seed, so that a job using a
registered style and one sending the pictures must give the same pixels.
"""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from styleserve.info import ServerInfo
from styleserve.v1 import style_transfer_pb2 as pb

from tests.server.service_helpers import connect, encoded, picture, request, rpc_error, sample

pytestmark = pytest.mark.timeout(180)

STYLE = encoded(picture((40, 40)), "JPEG")
# What the FAST jobs' targets depend on, for registrations that match them.
STYLE_OPTIONS: dict[str, Any] = {"size": 32, "precision": pb.PRECISION_FLOAT32}


def registration(*styles: bytes, **options: Any) -> pb.RegisterStyleRequest:
    return pb.RegisterStyleRequest(
        styles=[pb.StylePicture(image=pb.Image(data=s)) for s in styles or (STYLE,)],
        options=pb.StyleOptions(**{**STYLE_OPTIONS, **options}),
    )


def by_id(style_id: str, **options: Any) -> pb.StyleTransferRequest:
    """A FAST job naming ``style_id`` instead of sending pictures."""
    job = request(styles=[], **options)
    job.style_id = style_id
    return job


def result(stub: Any, job: pb.StyleTransferRequest) -> pb.Result:
    responses = list(stub.StyleTransfer(job, timeout=120))
    return responses[-1].result


def cache_info(stub: Any) -> pb.StyleCacheInfo:
    return stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=30).style_cache


def test_a_registered_style_gives_the_pictures_own_result(start_server):
    with start_server() as plain, connect(plain.target) as stub:
        direct = result(stub, request(seed=7))
    with start_server() as srv, connect(srv.target) as stub:
        registered = stub.RegisterStyle(registration(), timeout=60)
        assert registered.style_id.startswith("sty_") and len(registered.style_id) == 68
        assert registered.cached_bytes > len(STYLE)
        named = result(stub, by_id(registered.style_id, seed=7))
        instant_named = result(stub, by_id(registered.style_id, preset="instant", size=40))
    assert named.image.data == direct.image.data
    assert named.losses == direct.losses
    # The registration's style options are the job's.
    assert named.effective_options.precision == pb.PRECISION_FLOAT32
    assert named.effective_options.style_layers == direct.effective_options.style_layers
    with start_server() as plain, connect(plain.target) as stub:
        instant_direct = result(stub, request(preset="instant", size=40))
    assert instant_named.image.data == instant_direct.image.data


def test_the_same_pictures_sent_again_hit_the_cache(start_server):
    with start_server() as srv, connect(srv.target) as stub:
        result(stub, request(seed=1))
        assert sample(srv, "styleserve_style_cache_misses_total", lookup="pictures") == 1
        style_id = stub.RegisterStyle(registration(), timeout=60).style_id
        again = result(stub, request(seed=1))
        named = result(stub, by_id(style_id, seed=1))
        hits = {
            lookup: sample(srv, "styleserve_style_cache_hits_total", lookup=lookup)
            for lookup in ("pictures", "style_id")
        }
        # Other options, other targets: the same pictures at another style scale miss.
        result(stub, request(seed=1, style_scale=0.5))
        misses = sample(srv, "styleserve_style_cache_misses_total", lookup="pictures")
    assert hits == {"pictures": 1, "style_id": 1}
    assert misses == 2
    assert again.image.data == named.image.data


def test_an_unknown_style_id_is_not_found_and_says_to_register_again(server):
    with connect(server.target) as stub:
        error = rpc_error(stub.StyleTransfer(by_id("sty_" + "0" * 64), timeout=30))
        assert error.code() is grpc.StatusCode.NOT_FOUND
        assert "register it again with RegisterStyle" in error.details()
        malformed = rpc_error(stub.StyleTransfer(by_id("starry"), timeout=30))
        assert malformed.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert malformed.details().startswith("style_id:")
    assert sample(server, "styleserve_style_cache_misses_total", lookup="style_id") == 1


def test_a_style_id_with_pictures_or_other_style_options_is_invalid(server):
    with connect(server.target) as stub:
        style_id = stub.RegisterStyle(registration(), timeout=60).style_id
        both = request()
        both.style_id = style_id
        error = rpc_error(stub.StyleTransfer(both, timeout=30))
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert error.details().startswith("style_id: send a style_id or style pictures")
        error = rpc_error(stub.StyleTransfer(by_id(style_id, style_scale=2.0), timeout=30))
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert error.details().startswith("options.style_scale: the registered style")
        # Repeating the registration's value is no conflict.
        assert result(stub, by_id(style_id, style_scale=1.0)).width == 32


def test_an_oversized_registration_is_refused_with_nothing_stored(start_server):
    with start_server() as srv, connect(srv.target) as stub:
        needed = stub.RegisterStyle(registration(), timeout=60).cached_bytes
    # Room for the picture but not for its targets: refused after the work, nothing kept.
    for max_bytes in (len(STYLE) - 1, needed - 1):
        with start_server(style_cache_bytes=max_bytes) as srv, connect(srv.target) as stub:
            with pytest.raises(grpc.RpcError) as info:
                stub.RegisterStyle(registration(), timeout=60)
            assert info.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            assert f"holds at most {max_bytes}" in info.value.details()
            cache = cache_info(stub)
            assert (cache.max_bytes, cache.used_bytes, cache.entries) == (max_bytes, 0, 0)
            assert sample(srv, "styleserve_style_cache_bytes") == 0


def test_a_cache_of_zero_bytes_turns_registration_off(start_server):
    with start_server(style_cache_bytes=0) as srv, connect(srv.target) as stub:
        with pytest.raises(grpc.RpcError) as info:
            stub.RegisterStyle(registration(), timeout=60)
        assert info.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        assert "registration is off" in info.value.details()
        error = rpc_error(stub.StyleTransfer(by_id("sty_" + "0" * 64), timeout=30))
        assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
        # Jobs that send their pictures are untouched.
        assert result(stub, request()).width == 32
        assert cache_info(stub).max_bytes == 0


def test_the_least_recently_used_style_is_evicted_to_stay_within_the_bytes(start_server):
    styles = [encoded(picture((40 + 8 * i, 40)), "JPEG") for i in range(3)]
    with start_server() as srv, connect(srv.target) as stub:
        sizes = [stub.RegisterStyle(registration(s), timeout=60).cached_bytes for s in styles]
    # Any two fit, all three do not.
    with start_server(style_cache_bytes=sum(sizes) - 1) as srv, connect(srv.target) as stub:
        a, b = (stub.RegisterStyle(registration(s), timeout=60).style_id for s in styles[:2])
        result(stub, by_id(a))  # a is now more recent than b
        c = stub.RegisterStyle(registration(styles[2]), timeout=60).style_id
        cache = cache_info(stub)
        assert (cache.used_bytes, cache.entries) == (sizes[0] + sizes[2], 2)
        assert rpc_error(stub.StyleTransfer(by_id(b), timeout=30)).code() is (
            grpc.StatusCode.NOT_FOUND
        )
        assert result(stub, by_id(a)).width == result(stub, by_id(c)).width == 32
        assert sample(srv, "styleserve_style_cache_evictions_total") == 1
        assert sample(srv, "styleserve_style_cache_entries") == 2


def test_a_job_at_a_new_size_adds_its_targets_to_the_style(server):
    with connect(server.target) as stub:
        registered = stub.RegisterStyle(registration(), timeout=60)
        result(stub, by_id(registered.style_id))
        assert cache_info(stub).used_bytes == registered.cached_bytes
        result(stub, by_id(registered.style_id, size=48))
        grown = cache_info(stub)
        # Registering again returns the same style, with what it has kept since.
        again = stub.RegisterStyle(registration(), timeout=60)
    assert grown.entries == 1 and grown.used_bytes > registered.cached_bytes
    assert (again.style_id, again.cached_bytes) == (registered.style_id, grown.used_bytes)


def test_servers_with_the_same_weights_give_the_same_id(start_server):
    with start_server() as one, start_server() as two:
        with connect(one.target) as first, connect(two.target) as second:
            ids = [
                stub.RegisterStyle(registration(), timeout=60).style_id for stub in (first, second)
            ]
            other = first.RegisterStyle(registration(style_scale=0.5), timeout=60).style_id
            # The blend's shares decide, not how they are written.
            pair = registration(STYLE, STYLE)
            halves = second.RegisterStyle(pair, timeout=60).style_id
            for style in pair.styles:
                style.blend_weight = 3.0
            thirds = second.RegisterStyle(pair, timeout=60).style_id
            info = ServerInfo.from_proto(
                second.GetServerInfo(pb.GetServerInfoRequest(), timeout=30)
            ).style_cache
    assert ids[0] == ids[1] != other
    assert halves == thirds
    assert info is not None and (info.entries, info.max_bytes) == (2, 256 * 2**20)


def test_register_style_needs_the_token_and_checks_its_pictures(start_server):
    with start_server(auth_token="s3cret") as srv, connect(srv.target) as stub:
        with pytest.raises(grpc.RpcError) as info:
            stub.RegisterStyle(registration(), timeout=30)
        assert info.value.code() is grpc.StatusCode.UNAUTHENTICATED
        good = (("authorization", "Bearer s3cret"),)
        with pytest.raises(grpc.RpcError) as info:
            stub.RegisterStyle(registration(b"not a picture"), metadata=good, timeout=30)
        assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert info.value.details().startswith("styles[0]:")
        with pytest.raises(grpc.RpcError) as info:
            stub.RegisterStyle(pb.RegisterStyleRequest(), metadata=good, timeout=30)
        assert info.value.details().startswith("styles: send 1 to 8")
        # Options a registration does not read are not checked either.
        assert stub.RegisterStyle(registration(iterations=10**9), metadata=good, timeout=30)
        assert cache_info_with(stub, good).entries == 1


def cache_info_with(stub: Any, metadata: tuple[tuple[str, str], ...]) -> pb.StyleCacheInfo:
    return stub.GetServerInfo(pb.GetServerInfoRequest(), metadata=metadata, timeout=30).style_cache
