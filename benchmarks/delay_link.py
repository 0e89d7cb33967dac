"""A slow link for ssh's ProxyCommand: stdio <-> TCP, each chunk held back a fixed delay.

    ProxyCommand python3 /path/to/delay_link.py 10 %h %p

forwards ssh's stdin to ``%h:%p`` and the answers back to its stdout, every chunk
delivered ``10`` ms after it was read, in order, in each direction: a 20 ms round trip
for machines without netem (benchmarks/README.md, "forward_rtt"). Only the data is
delayed: TCP's acknowledgements between this process and the sshd travel at loopback
speed, so a Nagle stall on the sshd's socket waits for them less long than it would on
a real link of this round trip.

Standard library only, so that it runs under any ``python3``.
"""

from __future__ import annotations

import os
import queue
import socket
import sys
import threading
import time
from collections.abc import Callable

CHUNK = 1 << 16
Item = tuple[float, bytes]


def _reader(read: Callable[[], bytes], held: queue.Queue[Item], delay: float) -> None:
    while True:
        try:
            data = read()
        except OSError:
            data = b""
        held.put((time.monotonic() + delay, data))
        if not data:
            return


def _writer(
    held: queue.Queue[Item], write: Callable[[bytes], None], end: Callable[[], None]
) -> None:
    try:
        while True:
            due, data = held.get()
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)  # the emulated latency itself, not a wait for anything
            if not data:
                return
            write(data)
    except OSError:
        return
    finally:
        end()


def _write_all(fd: int) -> Callable[[bytes], None]:
    def write(data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]

    return write


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: delay_link.py DELAY_MS HOST PORT", file=sys.stderr)
        return 2
    delay = float(argv[0]) / 1000
    sock = socket.create_connection((argv[1], int(argv[2])), timeout=10)
    sock.settimeout(None)
    # The emulated link adds no Nagle of its own: what is measured is the ends' choice.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    up: queue.Queue[Item] = queue.Queue()
    down: queue.Queue[Item] = queue.Queue()
    stdin, stdout = sys.stdin.fileno(), sys.stdout.fileno()

    def shut_write() -> None:
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    threads = [
        threading.Thread(target=_reader, args=(lambda: os.read(stdin, CHUNK), up, delay)),
        threading.Thread(target=_writer, args=(up, sock.sendall, shut_write)),
        threading.Thread(target=_reader, args=(lambda: sock.recv(CHUNK), down, delay)),
        threading.Thread(target=_writer, args=(down, _write_all(stdout), lambda: os.close(stdout))),
    ]
    for t in threads:
        t.daemon = True
        t.start()
    # The connection is over when the server's side has ended (ssh closes our stdin
    # only when it exits itself).
    threads[3].join()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
