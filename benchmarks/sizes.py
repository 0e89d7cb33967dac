"""How big each scenario is: smoke (the test), default, and --full."""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Sizes:
    repeat: int
    download_mb: int  # file fetched through each forward
    rest_calls: int  # small REST calls per path
    kernel_execs: int  # kernel executions over the websocket per path
    scale_accounts: int  # accounts that run `up` at once
    cuts: tuple[float, ...]  # link cut lengths in seconds
    restore_wait: float  # how long to wait for a forward to come back after a cut
    soak_cuts: int  # random cuts in a row (the soak scenario), per repetition
    soak_range: tuple[float, float]  # their lengths are uniform in this range, seconds
    sync_files: int  # small files in the tree `tether sync` and `rsync -a` copy
    sync_notebooks: int  # notebooks beside them


SMOKE = Sizes(
    repeat=1,
    download_mb=1,
    rest_calls=20,
    kernel_execs=5,
    scale_accounts=2,
    cuts=(3.0,),
    restore_wait=60.0,
    soak_cuts=2,
    soak_range=(1.0, 2.0),
    sync_files=30,  # still more than transfer.MANY_FILES: the rsync path runs
    sync_notebooks=2,
)
DEFAULT = Sizes(
    repeat=3,
    download_mb=20,
    rest_calls=200,
    kernel_execs=50,
    scale_accounts=4,
    cuts=(10.0,),
    restore_wait=120.0,
    soak_cuts=3,
    soak_range=(1.0, 6.0),  # some shorter than ssh notices, some longer
    sync_files=1000,
    sync_notebooks=20,
)
FULL = Sizes(
    repeat=5,
    download_mb=100,
    rest_calls=1000,
    kernel_execs=200,
    scale_accounts=20,
    cuts=(10.0, 60.0),
    restore_wait=240.0,
    soak_cuts=20,  # 20 random cuts of 1-30 s in a row (benchmarks/README.md)
    soak_range=(1.0, 30.0),
    sync_files=1000,
    sync_notebooks=20,
)


def choose(*, full: bool, smoke: bool, repeat: int | None) -> Sizes:
    sizes = SMOKE if smoke else FULL if full else DEFAULT
    return sizes if repeat is None else replace(sizes, repeat=repeat)
