# A throwaway Unix socket at argv[1] that answers one connection with "tether-ok", or
# gives up after 30 s; then removes itself and its directory (`tether doctor`).
import os
import socket
import sys

path = sys.argv[1]
s = socket.socket(socket.AF_UNIX)
s.bind(path)
s.listen(1)
s.settimeout(30)
try:
    c, _ = s.accept()
    c.sendall(b"tether-ok\n")
    c.close()
except OSError:
    pass
finally:
    os.unlink(path)
    os.rmdir(os.path.dirname(path))
