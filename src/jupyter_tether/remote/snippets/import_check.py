# Imports every top-level package of the named distributions that has an importable
# name; run by the builder under the new environment's python. argv[1] is a JSON list
# of names; prints {"checked": [...], "failed": {dist: why}} as one JSON line.
import importlib
import importlib.metadata as md
import json
import re
import sys
from typing import Any, Dict, List


def top_levels(d: md.Distribution) -> List[str]:
    tops = (d.read_text("top_level.txt") or "").split()
    if not tops:
        tops = sorted(
            {
                f.parts[0].split(".")[0]
                for f in (d.files or [])
                if f.parts
                and not f.parts[0].endswith((".dist-info", ".data"))
                and f.parts[0] not in ("..", "bin")
                and (
                    (len(f.parts) == 1 and f.suffix == ".py")
                    or (len(f.parts) > 1 and f.parts[-1] == "__init__.py")
                )
            }
        )
    return [t for t in tops if t.isidentifier() and not t.startswith("_")]


out: Dict[str, Any] = {"checked": [], "failed": {}}
for dist in json.loads(sys.argv[1]):
    try:
        d = md.distribution(dist)
    except Exception:
        out["failed"][dist] = "not installed"
        continue
    tops = top_levels(d)
    if not tops:
        continue
    want = re.sub(r"[-_.]+", "_", dist).lower()
    mod = want if want in tops else tops[0]
    try:
        importlib.import_module(mod)
        out["checked"].append(mod)
    except BaseException as exc:
        out["failed"][dist] = "%s: %s" % (type(exc).__name__, exc)
print(json.dumps(out))
