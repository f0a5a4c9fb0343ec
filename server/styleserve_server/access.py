"""Who may call what, decided from a call's headers before its body is read.

A token checked by the servicer comes too late: gRPC has read, decompressed and parsed the
whole request by then, so an unauthenticated caller could make the server hold a request's
worth of memory per call. ``TokenGate`` looks at the metadata alone, as the call arrives, and
refuses with a handler that never reads the request: the client's bytes stay in the transport's
flow-control window and go with the call. Only what a kubelet probe needs stays open
(``grpc.health.v1.Health/Check``); the health stream (``Watch``) and reflection follow the token
too, reflection unless the operator opens it.

``BoundedHealth`` is the health service with its one caller-sized value, the service name,
bounded: a name no server has is refused at once instead of being held for as long as a
``Watch`` stays open.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from grpc_health.v1 import health_pb2
from grpc_health.v1.health import aio as health_aio
from styleserve.options import OptionsError, check_request_id

__all__ = [
    "MAX_HEALTH_REQUEST_BYTES",
    "BoundedHealth",
    "TokenGate",
    "UNAUTHENTICATED_MESSAGE",
    "caller_identity",
]

log = logging.getLogger(__name__)

UNAUTHENTICATED_MESSAGE = (
    "missing or wrong token: send the metadata 'authorization: Bearer <token>' with the token "
    "the server was started with (STYLESERVE_AUTH_TOKEN)"
)
# Kubelet's gRPC probes send no token.
_OPEN_METHODS = frozenset({"/grpc.health.v1.Health/Check"})
_REFLECTION = (
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)
# Service names are short ("", "styleserve.v1.StyleTransferService"): anything longer is no
# service of this server.
_MAX_SERVICE_NAME = 256
# The most a health request can need (the name and its framing): the health-only port's
# message limit.
MAX_HEALTH_REQUEST_BYTES = 1024


async def _refuse(
    request_id: str, _requests: AsyncIterator[Any], context: grpc.aio.ServicerContext
) -> None:
    """Ends the call UNAUTHENTICATED without reading its request (a streaming-request handler
    reads only when asked)."""
    trailers = (("x-request-id", request_id),)
    await context.abort(grpc.StatusCode.UNAUTHENTICATED, UNAUTHENTICATED_MESSAGE, trailers)


class TokenGate(grpc.aio.ServerInterceptor):
    """Lets a call through when it carries ``authorization: Bearer <token>`` or calls an open
    method; refuses it before its request is read otherwise. ``refused(method, request_id)``
    counts and logs each refusal, as the servicer does its own calls."""

    def __init__(
        self, token: str, *, open_reflection: bool, refused: Callable[[str, str], None]
    ) -> None:
        self._expected = f"Bearer {token}".encode()
        self._open_reflection = open_reflection
        self._refused = refused

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        method = details.method
        if method in _OPEN_METHODS or (self._open_reflection and method.startswith(_REFLECTION)):
            return await continuation(details)
        metadata = dict(details.invocation_metadata or ())
        sent = str(metadata.get("authorization", "")).encode()
        if hmac.compare_digest(sent, self._expected):
            return await continuation(details)
        asked = str(metadata.get("x-request-id", ""))
        try:
            check_request_id(asked)
        except OptionsError:
            asked = ""  # never logged or echoed: the call gets an id of the server's own
        request_id = asked or uuid.uuid4().hex
        self._refused(method.rpartition("/")[2], request_id)
        return grpc.stream_stream_rpc_method_handler(functools.partial(_refuse, request_id))


def caller_identity(context: grpc.aio.ServicerContext, *, token_checked: bool) -> str:
    """Who a call comes from, as far as the server checks it: a digest of its bearer token
    (where the server checks one: ``token_checked``) and of its client certificate (mTLS);
    "" where it checks neither. Digested, so that what binds a job to its caller is no secret
    itself."""
    parts: list[bytes] = []
    if token_checked:
        metadata = dict(context.invocation_metadata() or ())
        parts.append(str(metadata.get("authorization", "")).encode())
    parts.extend(context.auth_context().get("x509_pem_cert", ()))
    if not parts:
        return ""
    return hashlib.sha256(b"\0".join(parts)).hexdigest()


def _refused_name(service: str, context: grpc.aio.ServicerContext) -> bool:
    """Whether ``service`` is past the bound, the call's status then set. Set, not raised with
    ``context.abort``: gRPC keeps an abort on the call's state, in a cycle with the handler's
    frame that would hold the request until the garbage collector runs."""
    if len(service) <= _MAX_SERVICE_NAME:
        return False
    context.set_code(grpc.StatusCode.INVALID_ARGUMENT)
    context.set_details(f"service names are at most {_MAX_SERVICE_NAME} characters")
    return True


class BoundedHealth(health_aio.HealthServicer):
    """grpc.health.v1 whose service names are bounded (INVALID_ARGUMENT past the bound)."""

    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext
    ) -> health_pb2.HealthCheckResponse:
        if _refused_name(request.service, context):
            return health_pb2.HealthCheckResponse()  # not sent: the status is an error
        return await super().Check(request, context)

    async def Watch(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext
    ) -> None:
        if not _refused_name(request.service, context):
            await super().Watch(request, context)
