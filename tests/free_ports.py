"""Free loopback ports for tests that must name a server's port before it starts (cluster
members name each other). Imported by the check_*.py scripts beside it."""
import socket


def free_ports(count):
    """Ports the kernel hands out now (closed again: a small race, fine on a test machine)."""
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports
