# What the builder needs to know of an interpreter, as one JSON line: its version, its
# platform tag and whether the modules users notice missing first import.
import json
import sys
import sysconfig

mods = {}
for m in ("ssl", "zlib", "ctypes", "sqlite3", "bz2", "lzma"):
    try:
        __import__(m)
        mods[m] = ""
    except BaseException as exc:
        mods[m] = "%s: %s" % (type(exc).__name__, exc)
print(
    json.dumps(
        {
            "executable": sys.executable,
            "version": list(sys.version_info[:3]),
            "modules": mods,
            "platform": sysconfig.get_platform(),
        }
    )
)
