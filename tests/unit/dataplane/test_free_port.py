"""free_port never hands the same port out twice while a server may still be binding it."""

from __future__ import annotations

import socket

from nexus_dataplane.process import RECENT_PORTS, free_port


def test_ports_handed_out_are_distinct_and_bindable() -> None:
    ports = [free_port() for _ in range(RECENT_PORTS // 2)]
    assert len(set(ports)) == len(ports), "a port was handed out twice"
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", ports[-1]))
