"""A loopback TCP proxy a test controls, to break a client's connection mid-call on command.

Reattach tests need the connection itself to die (as a mobile network, a proxy's idle timeout
or a balancer restart kill it), with the server and the job left running: stopping the server
or cancelling the call would test something else. ``TcpProxy`` forwards bytes between each
accepted connection and the server, and ``drop()`` resets every connection open at that
moment; the proxy keeps listening, so the client's next connection goes through again.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading

__all__ = ["TcpProxy"]

_BUFFER_BYTES = 65536


class TcpProxy:
    """Forwards ``127.0.0.1:<port>`` (``target``) to ``upstream`` ("host:port")."""

    def __init__(self, upstream: str) -> None:
        host, port = upstream.rsplit(":", 1)
        self._upstream = (host, int(port))
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.target = f"127.0.0.1:{self.port}"
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self.connections = 0
        self.drops = 0
        self._closed = False
        self._acceptor = threading.Thread(target=self._accept, name="tcp-proxy", daemon=True)
        self._acceptor.start()

    def drop(self) -> int:
        """Resets every connection open now (RST, as a dead network would look to gRPC);
        returns how many."""
        self.drops += 1
        return self._reset_all()

    def close(self) -> None:
        self._closed = True
        # shutdown wakes the acceptor blocked in accept(), which close alone would not.
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._reset_all()
        self._acceptor.join(timeout=5)

    def _reset_all(self) -> int:
        with self._lock:
            sockets, self._open = self._open, set()
        for sock in sockets:
            _reset(sock)
        return len(sockets) // 2

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:  # closed
                return
            try:
                server = socket.create_connection(self._upstream, timeout=5)
            except OSError:
                _reset(client)
                continue
            server.settimeout(None)
            with self._lock:
                self._open.update((client, server))
                self.connections += 1
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=_pump, args=(source, sink), daemon=True).start()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    """Copies ``source`` to ``sink`` until either end closes; then closes both."""
    try:
        while data := source.recv(_BUFFER_BYTES):
            sink.sendall(data)
    except OSError:
        pass
    _reset(source)
    _reset(sink)


def _reset(sock: socket.socket) -> None:
    # SO_LINGER 0: close sends RST, so the far end sees the connection die at once; shutdown
    # first, since closing alone does not wake the pump blocked reading it.
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
