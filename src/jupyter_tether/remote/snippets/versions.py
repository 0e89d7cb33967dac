# Versions of the Jupyter packages in this interpreter's environment, as one JSON line.
# Run by the agent under the Python next to `jupyter` (remote/planning.py).
import json

try:
    import importlib.metadata as m
except ImportError:
    import importlib_metadata as m  # type: ignore[no-redef,import-not-found,unused-ignore]

out = {}
for d in ("jupyter_server", "jupyterlab", "notebook", "ipykernel"):
    try:
        out[d] = m.version(d)
    except Exception:  # noqa: S112
        continue
print(json.dumps(out))
