# The interpreter's version and its installed distributions, as one JSON line
# (`tether env`).
import importlib.metadata as md
import json
import sys

pkgs = sorted(
    {(d.metadata["Name"], d.version) for d in md.distributions() if d.metadata["Name"]},
    key=lambda p: p[0].lower(),
)
print(json.dumps({"python": "%d.%d.%d" % sys.version_info[:3], "packages": pkgs}))
