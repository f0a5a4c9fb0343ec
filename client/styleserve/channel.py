"""What the sync and asyncio clients share: the channel, call metadata and starting a job.

Both clients derive from ``Connection`` so that message limits, load balancing across a
Kubernetes headless service, TLS, the bearer token and the default deadline behave the same
in either; they differ only in the grpc module (``grpc`` or ``grpc.aio``) that makes the channel.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc

from styleserve.options import GRPC_DEFAULT_MESSAGE_BYTES, LIMITS, OptionsError, shown
from styleserve.tracing import trace_metadata
from styleserve.v1.style_transfer_pb2_grpc import StyleTransferServiceStub

__all__ = [
    "LOAD_BALANCING_POLICIES",
    "MAX_RETRIES",
    "MAX_TIMEOUT_SECONDS",
    "RETRY_BACKOFF_MULTIPLIER",
    "RETRY_INITIAL_BACKOFF",
    "RETRY_MAX_BACKOFF",
    "ChannelArgument",
    "Connection",
    "PemSource",
    "check_timeout",
]

ChannelArgument = tuple[str, Any]
# PEM data itself (bytes) or the path of a file holding it.
PemSource = bytes | str | os.PathLike[str]
LOAD_BALANCING_POLICIES = ("pick_first", "round_robin")
# The longest deadline (about three years): gRPC overflows past some 1e9 seconds and fails the
# call at once.
MAX_TIMEOUT_SECONDS = 1e8

# A result at the largest output side is a few tens of MB as PNG; gRPC's default receive limit
# (4 MiB) would refuse it from a server too old to send it in chunks.
_MAX_RECEIVE_BYTES = 4 * LIMITS.max_request_bytes
# The largest response the client asks a server for (DeliveryOptions.max_message_bytes), a
# larger result coming in chunks: gRPC's default receive limit, which a proxy on the way takes
# too, and a modest bound on what one message makes either side hold.
_RESPONSE_MESSAGE_BYTES = GRPC_DEFAULT_MESSAGE_BYTES
# The least DeliveryOptions.max_message_bytes a server takes (its Result's fields and a chunk).
_LEAST_RESPONSE_BYTES = 64 * 1024


# Channel arguments by which a caller picks the load balancing policy itself.
_BALANCING_ARGUMENTS = frozenset({"grpc.service_config", "grpc.lb_policy_name"})
# gRPC retries a call only while its request fits the retry buffer (256 KiB by default), and
# a request carries pictures: room for the largest request the server accepts by default.
_RETRY_BUFFER_BYTES = LIMITS.max_request_bytes
# gRPC caps a retry policy's attempts at 5.
MAX_RETRIES = 4
# The retry policy's backoff, which reattaching a detachable job (``styleserve.resume``) follows
# too: one pace for every "the server is not there, try again" in the client.
RETRY_INITIAL_BACKOFF = 0.5
RETRY_MAX_BACKOFF = 10.0
RETRY_BACKOFF_MULTIPLIER = 2


def _retry_policy(retries: int) -> dict[str, Any]:
    """Retries of calls the server refused before their stream started: UNAVAILABLE (a
    replica starting or draining) and RESOURCE_EXHAUSTED (full), after the delay the server
    pushes back with (grpc-retry-pushback-ms) or else an exponential backoff. gRPC never
    retries a call once the server has sent its headers, so a job that started is never sent
    twice."""
    return {
        "name": [{"service": "styleserve.v1.StyleTransferService"}],
        "retryPolicy": {
            "maxAttempts": retries + 1,
            "initialBackoff": f"{RETRY_INITIAL_BACKOFF}s",
            "maxBackoff": f"{RETRY_MAX_BACKOFF}s",
            "backoffMultiplier": RETRY_BACKOFF_MULTIPLIER,
            "retryableStatusCodes": ["UNAVAILABLE", "RESOURCE_EXHAUSTED"],
        },
    }


def check_timeout(timeout: float | None) -> float | None:
    """``timeout`` checked: seconds above 0 and at most MAX_TIMEOUT_SECONDS, or None for no
    deadline (gRPC would take 0, a negative, NaN, infinite or overflowing one as already
    passed, and fail the call at once). Raises OptionsError naming timeout."""
    if timeout is None or (isinstance(timeout, int | float) and 0 < timeout <= MAX_TIMEOUT_SECONDS):
        return timeout
    raise OptionsError(
        "timeout",
        f"must be seconds above 0 and at most {MAX_TIMEOUT_SECONDS:.0e}, or None for no "
        f"deadline; got {shown(timeout)}",
    )


def _checked_token(token: str | None) -> str | None:
    """``token`` without surrounding whitespace (a Secret file's or a variable's newline), as
    the server reads its own; refused when it holds what no header value may (gRPC would fail
    every call as INTERNAL "Invalid metadata")."""
    if token is None:
        return None
    token = token.strip()
    if not all(" " <= c <= "~" for c in token):
        raise OptionsError("token", "may hold printable ASCII only (as an HTTP header value)")
    return token


def _default_balancing(target: str, channel_options: Sequence[ChannelArgument]) -> str | None:
    """round_robin for a target that may stand for many servers: a ``dns:`` name (a headless
    Service's pods) or an ``ipv4:``/``ipv6:`` list of addresses. gRPC's own pick_first would
    send every call to the first of them."""
    if not target.startswith(("dns:", "ipv4:", "ipv6:")):
        return None
    if any(name in _BALANCING_ARGUMENTS for name, _ in channel_options):
        return None
    return "round_robin"


def _channel_arguments(
    load_balancing: str | None,
    retries: int,
    channel_options: Sequence[ChannelArgument],
) -> list[ChannelArgument]:
    if not 0 <= retries <= MAX_RETRIES:
        raise ValueError(f"retries must be in [0, {MAX_RETRIES}], got {retries!r}")
    given = {name for name, _ in channel_options}
    # gRPC takes the first of two values of an argument: the caller's replaces the client's.
    arguments: list[ChannelArgument] = [
        (name, value)
        for name, value in (
            ("grpc.max_receive_message_length", _MAX_RECEIVE_BYTES),
            ("grpc.per_rpc_retry_buffer_size", _RETRY_BUFFER_BYTES),
            ("grpc.retry_buffer_size", 4 * _RETRY_BUFFER_BYTES),
        )
        if name not in given
    ]
    config: dict[str, Any] = {}
    if retries:
        config["methodConfig"] = [_retry_policy(retries)]
    if load_balancing is not None:
        if load_balancing not in LOAD_BALANCING_POLICIES:
            raise ValueError(
                f"load_balancing must be one of {', '.join(LOAD_BALANCING_POLICIES)},"
                f" got {shown(load_balancing)}"
            )
        config["loadBalancingConfig"] = [{load_balancing: {}}]
    if config and "grpc.service_config" not in given:
        arguments.append(("grpc.service_config", json.dumps(config)))
    return [*arguments, *channel_options]


def _response_message_bytes(channel_options: Sequence[ChannelArgument]) -> int:
    """The largest response to ask for: a smaller receive limit the caller set keeps it, down
    to the least a server sends in (DeliveryOptions.max_message_bytes), else OptionsError:
    every job would be refused."""
    asked = dict(channel_options).get("grpc.max_receive_message_length")
    if isinstance(asked, int) and 0 < asked < _LEAST_RESPONSE_BYTES:
        raise OptionsError(
            "channel_options",
            f"grpc.max_receive_message_length is {asked}: results come in messages of at least"
            f" {_LEAST_RESPONSE_BYTES} bytes; allow that much, or leave it out",
        )
    if isinstance(asked, int) and 0 < asked < _RESPONSE_MESSAGE_BYTES:
        return asked
    return _RESPONSE_MESSAGE_BYTES


def _pem(source: PemSource | None) -> bytes | None:
    if source is None or isinstance(source, bytes):
        return source
    return Path(source).read_bytes()


def _tls_credentials(
    ca_cert: PemSource | None, client_cert: PemSource | None, client_key: PemSource | None
) -> grpc.ChannelCredentials:
    if (client_cert is None) != (client_key is None):
        raise OptionsError(
            "client_cert" if client_cert is None else "client_key",
            "client_cert and client_key go together (mTLS): pass both or neither",
        )
    return grpc.ssl_channel_credentials(
        root_certificates=_pem(ca_cert),
        private_key=_pem(client_key),
        certificate_chain=_pem(client_cert),
    )


class Connection:
    """A channel to one styleserve server or, with a ``dns:///host:port`` target, to every
    address the name resolves to (e.g. the pods behind a Kubernetes headless service; an
    ``ipv4:``/``ipv6:`` list alike), calls spread over them by ``load_balancing``:
    "round_robin" unless the caller passes "pick_first" or a service config in
    ``channel_options``. Other targets default to gRPC's pick_first.

    ``tls=True`` uses the system's root certificates; ``ca_cert`` trusts a private CA instead,
    and ``client_cert`` with ``client_key`` present a client certificate (mTLS); each is PEM
    bytes or a file's path, and any of them implies TLS. ``credentials`` replaces all of these.
    ``token`` is sent as ``authorization: Bearer <token>`` (surrounding whitespace dropped);
    with OpenTelemetry's API installed, the caller's trace context goes with every call too
    (``styleserve.tracing``). ``timeout``
    (seconds) is the default deadline of each call. ``retries`` (0 to MAX_RETRIES) is how often
    a call the server refused before it started (UNAVAILABLE, RESOURCE_EXHAUSTED) is sent
    again, after the delay the server asks for. ``channel_options`` are extra gRPC channel
    arguments; a service config among them replaces the client's (balancing and retries).
    """

    # ``grpc`` or ``grpc.aio``: both spell the channel constructors the same way.
    _grpc: ModuleType = grpc

    def __init__(
        self,
        target: str,
        *,
        tls: bool = False,
        ca_cert: PemSource | None = None,
        client_cert: PemSource | None = None,
        client_key: PemSource | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        token: str | None = None,
        timeout: float | None = None,
        load_balancing: str | None = None,
        retries: int = 2,
        channel_options: Sequence[ChannelArgument] = (),
    ) -> None:
        if not isinstance(target, str) or not target.strip():
            raise OptionsError(
                "target", f"give the server's address, as 'host:port'; got {shown(target)}"
            )
        pems = (ca_cert, client_cert, client_key)
        if credentials is not None and any(pem is not None for pem in pems):
            raise ValueError("pass credentials or ca_cert/client_cert/client_key, not both")
        if credentials is None and (tls or any(pem is not None for pem in pems)):
            credentials = _tls_credentials(*pems)
        if load_balancing is None:
            load_balancing = _default_balancing(target, channel_options)
        arguments = _channel_arguments(load_balancing, retries, channel_options)
        self.target = target
        # The policy spreading calls over the target's addresses; None: the caller's service
        # config decides, or gRPC's pick_first (a batch then counts one replica).
        self.load_balancing = load_balancing
        self.timeout = check_timeout(timeout)
        self._response_message_bytes = _response_message_bytes(channel_options)
        token = _checked_token(token)
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self._credentials = credentials
        self._arguments = arguments
        self._channel = self._open_channel(target, arguments)
        self._stub = StyleTransferServiceStub(self._channel)
        self._closed = False

    def _open_channel(self, target: str, arguments: Sequence[ChannelArgument]) -> Any:
        if self._credentials is None:
            return self._grpc.insecure_channel(target, arguments)
        return self._grpc.secure_channel(target, self._credentials, arguments)

    def _replica_channel(self, replica: str) -> Any:
        """A channel like the client's to one replica's own address (``Started.replica``), or
        None when there is none or it is the client's target; the caller closes it. Over TLS
        the replica is checked against the target's host name: it presents the service's
        certificate, not one for its pod address."""
        if not replica or replica == self.target:
            return None
        arguments = list(self._arguments)
        override = "grpc.ssl_target_name_override"
        if self._credentials is not None and override not in dict(arguments):
            host = self.target.rsplit("/", 1)[-1].rsplit(":", 1)[0].strip("[]")
            arguments.append((override, host))
        return self._open_channel(replica, arguments)

    def _check_open(self) -> None:
        """Raises ValueError once the client is closed (before any stub touches its channel:
        grpcio crashes the process making one on a closed channel)."""
        if self._closed:
            raise ValueError("this client is closed: make another one (or call it inside its with)")

    def _call_options(self, timeout: float | None) -> dict[str, Any]:
        """Deadline (``timeout`` or the client's default) and metadata of one call, the
        caller's trace context included (``styleserve.tracing``)."""
        self._check_open()
        return {
            "timeout": self.timeout if timeout is None else check_timeout(timeout),
            "metadata": (*self._metadata, *trace_metadata()),
        }
