"""Whether this kernel has the `tls` ULP (kTLS), asked the way the library asks it."""

import errno
import socket

TCP_ULP = 31  # linux/tcp.h


def ktls_available():
    """The ULP is looked up before the socket's state: ENOENT means no `tls` module, ENOTCONN
    (an unconnected socket) means the kernel has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.setsockopt(socket.IPPROTO_TCP, TCP_ULP, b"tls")
        except OSError as e:
            return e.errno == errno.ENOTCONN
        return True
