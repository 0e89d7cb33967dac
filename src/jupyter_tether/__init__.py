"""jupyter-tether: a JupyterLab on any server you can ssh to, without root, always connected."""

__version__ = "0.1.0"
