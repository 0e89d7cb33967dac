"""What the tests and the benchmarks build on this machine; not part of the product.

``sshd`` (the demo's throwaway sshd, also inside a network namespace), ``accounts``
(test accounts, the system python, uv), ``envs`` (Jupyter environments from PyPI),
``netns`` (a jump host and a server behind it in network namespaces), ``cluster``
(a Slurm login node and two compute nodes in namespaces) and ``helpers``
(running the CLI and commands as an account, ssh masters, locks, Jupyter kernels).
Root is needed for some of it, and each function says so.
"""
