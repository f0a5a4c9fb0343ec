"""What the sync and asyncio clients share: the channel, call metadata and starting a job.

Both clients derive from ``Connection`` so that message limits, load balancing across a
Kubernetes headless service, TLS, the bearer token and the default deadline behave the same
in either; they differ only in the grpc module (``grpc`` or ``grpc.aio``) that makes the channel.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from types import ModuleType
from typing import Any

import grpc

from styleserve.options import LIMITS
from styleserve.pictures import Picture
from styleserve.request import Styles, build_request
from styleserve.v1.style_transfer_pb2_grpc import StyleTransferServiceStub

__all__ = ["LOAD_BALANCING_POLICIES", "ChannelArgument", "Connection"]

ChannelArgument = tuple[str, Any]
LOAD_BALANCING_POLICIES = ("pick_first", "round_robin")

# A result at the largest output side is a few tens of MB as PNG; gRPC's default receive limit
# (4 MiB) would refuse it.
_MAX_RECEIVE_BYTES = 4 * LIMITS.max_request_bytes


# Channel arguments by which a caller picks the load balancing policy itself.
_BALANCING_ARGUMENTS = frozenset({"grpc.service_config", "grpc.lb_policy_name"})


def _default_balancing(target: str, channel_options: Sequence[ChannelArgument]) -> str | None:
    """round_robin for a ``dns:`` target, whose name may stand for many servers (a headless
    Service's pods): gRPC's own pick_first would send every call to the first of them."""
    if not target.startswith("dns:"):
        return None
    if any(name in _BALANCING_ARGUMENTS for name, _ in channel_options):
        return None
    return "round_robin"


def _channel_arguments(
    target: str, load_balancing: str | None, channel_options: Sequence[ChannelArgument]
) -> list[ChannelArgument]:
    arguments: list[ChannelArgument] = [("grpc.max_receive_message_length", _MAX_RECEIVE_BYTES)]
    if load_balancing is None:
        load_balancing = _default_balancing(target, channel_options)
    if load_balancing is not None:
        if load_balancing not in LOAD_BALANCING_POLICIES:
            raise ValueError(
                f"load_balancing must be one of {', '.join(LOAD_BALANCING_POLICIES)},"
                f" got {load_balancing!r}"
            )
        config: dict[str, Any] = {"loadBalancingConfig": [{load_balancing: {}}]}
        arguments.append(("grpc.service_config", json.dumps(config)))
    return [*arguments, *channel_options]


class Connection:
    """A channel to one styleserve server or, with a ``dns:///host:port`` target, to every
    address the name resolves to (e.g. the pods behind a Kubernetes headless service), calls
    spread over them by ``load_balancing``: "round_robin" unless the caller passes
    "pick_first" or a service config in ``channel_options``. Other targets default to gRPC's
    pick_first.

    ``tls=True`` uses the system's root certificates; pass ``credentials`` for anything else.
    ``token`` is sent as ``authorization: Bearer <token>``. ``timeout`` (seconds) is the default
    deadline of each call; ``channel_options`` are extra gRPC channel arguments.
    """

    # ``grpc`` or ``grpc.aio``: both spell the channel constructors the same way.
    _grpc: ModuleType = grpc

    def __init__(
        self,
        target: str,
        *,
        tls: bool = False,
        credentials: grpc.ChannelCredentials | None = None,
        token: str | None = None,
        timeout: float | None = None,
        load_balancing: str | None = None,
        channel_options: Sequence[ChannelArgument] = (),
    ) -> None:
        if credentials is None and tls:
            credentials = grpc.ssl_channel_credentials()
        arguments = _channel_arguments(target, load_balancing, channel_options)
        self.target = target
        self.timeout = timeout
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self._channel = (
            self._grpc.secure_channel(target, credentials, arguments)
            if credentials is not None
            else self._grpc.insecure_channel(target, arguments)
        )
        self._stub = StyleTransferServiceStub(self._channel)

    def _call_options(self, timeout: float | None) -> dict[str, Any]:
        """Deadline (``timeout`` or the client's default) and metadata of one call."""
        return {
            "timeout": self.timeout if timeout is None else timeout,
            "metadata": self._metadata,
        }

    def _start_job(
        self,
        content: Picture,
        styles: Styles,
        init_image: Picture | None,
        request_id: str | None,
        timeout: float | None,
        options: dict[str, Any],
    ) -> Any:
        """Sends the job's request; the call that streams its events."""
        request = build_request(
            content, styles, init_image=init_image, request_id=request_id, options=options
        )
        return self._stub.StyleTransfer(request, **self._call_options(timeout))
