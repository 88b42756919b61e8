"""A TCP proxy in front of a real server that passes the first N bytes of each answer and then goes silent
(connection open, nothing more): a server that hangs mid-transfer, for the timeout tests."""

from __future__ import annotations

import socket
import threading


class StallingProxy:
    def __init__(self, target_port: int, pass_bytes: int):
        self.target_port, self.pass_bytes = target_port, pass_bytes
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.stop_event = threading.Event()
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stop_event.is_set():
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            self.conns += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream, None), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, self.pass_bytes), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, limit: int | None) -> None:
        sent = 0
        try:
            while not self.stop_event.is_set():
                data = src.recv(65536)
                if not data:  # one side closed: close the other (a server would see a clean end, not a hang)
                    for sock in (src, dst):
                        try:
                            sock.shutdown(socket.SHUT_RDWR)
                        except OSError:
                            pass
                    return
                if limit is not None:
                    data = data[: max(0, limit - sent)]
                    if not data:
                        continue  # swallow the rest: the client waits for bytes that never come
                dst.sendall(data)
                sent += len(data)
        except OSError:
            return

    def close(self) -> None:
        self.stop_event.set()
        for s in [self.sock, *self.conns]:
            try:
                s.close()
            except OSError:
                pass
