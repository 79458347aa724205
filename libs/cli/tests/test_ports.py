"""The documented ports are reused after a restart: only a listening program makes a port taken."""

from __future__ import annotations

import socket

from retain_cli.stack import port_is_free


def test_a_listening_port_is_taken_and_one_left_in_time_wait_by_a_stopped_server_is_free() -> None:
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    assert not port_is_free(port)

    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = server.accept()
    accepted.close()  # the server side closes first: its end of the connection stays in TIME_WAIT
    client.close()
    server.close()
    assert port_is_free(port)
