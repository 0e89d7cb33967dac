"""jupyter-tether: a JupyterLab on any server you can ssh to, without root, always connected."""

from importlib import metadata

try:
    __version__ = metadata.version("jupyter-tether")
except metadata.PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"
