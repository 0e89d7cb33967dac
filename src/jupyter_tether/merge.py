"""A merged candidate for a notebook changed on both sides (README: Syncing notebooks).

nbdime's three-way merge, on the workstation, when it is installed
(``pip install 'jupyter-tether[merge]'``); tether works without it and says so.
Its default ("inline") strategy merges what does not clash and writes nbdime's
conflict markers into the cells where both sides changed the same thing.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass

MISSING = "nbdime is not installed: pip install 'jupyter-tether[merge]' for a merged candidate"


@dataclass(frozen=True)
class Merged:
    data: bytes  # the candidate notebook, as nbformat writes it
    conflicts: int  # decisions nbdime could not settle (marked inline in the candidate)


def available() -> bool:
    return importlib.util.find_spec("nbdime") is not None


def merge_notebooks(base: bytes, local: bytes, remote: bytes) -> Merged:
    """Three-way merge of three .ipynb files; ValueError if one is not a notebook."""
    # Imported here: nbdime and nbformat take a second or two to load, and only a
    # conflicted notebook needs them.
    import nbformat
    from nbdime.merging import merge_notebooks as nbdime_merge
    from nbformat.v4.rwbase import rejoin_lines

    def read(data: bytes) -> object:
        # As they are, not through nbformat.reads: that gives cells without an id a new
        # random one on each side, and the three then disagree about every cell.
        try:
            nb = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"not a notebook: {exc}") from exc
        if not isinstance(nb, dict) or not isinstance(nb.get("cells"), list):
            raise ValueError("not a notebook: no list of cells")
        # Sources and texts as one string each, as nbformat.reads gives them to nbdime.
        return rejoin_lines(nbformat.from_dict(nb))  # type: ignore[no-untyped-call]

    merged, decisions = nbdime_merge(read(base), read(local), read(remote))
    conflicts = sum(1 for d in decisions if d.conflict)
    text: str = nbformat.writes(merged)  # type: ignore[no-untyped-call]
    return Merged(text.encode("utf-8") + b"\n", conflicts)
