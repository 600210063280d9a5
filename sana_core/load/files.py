"""Where a component's files are, and reading its JSON configs.

One set of rules for every component. A component is given as a weight file, as its
own folder (``config.json`` + weights) or as a whole diffusers repo holding it as ``<component>/``. In a folder the
weights are, for each stem in the order given and each variant in ``VARIANTS`` order, the first of: a sharded index,
a single safetensors file, a ``.bin``; failing those, the folder's only ``*.safetensors`` file.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import SanaError

VARIANTS = ("", ".bf16", ".fp16", ".fp32")  # diffusers' variant names, the plain (full-precision) file first


# --- where the files are -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Located:
    """A component as given: a weight file, or the component's folder (``repo`` set when that is ``repo/<name>/``)."""

    path: Path
    repo: Path | None = None

    @property
    def is_file(self) -> bool:
        return self.path.is_file()

    @property
    def config(self) -> Path | None:
        """The folder's ``config.json``; None for a folder without one and for a single file."""
        cfg = self.path / "config.json"
        return cfg if not self.is_file and cfg.is_file() else None

    def weights(self, stems: tuple[str, ...], what: str) -> Path:
        """The weight file itself, or the one ``find_weights`` picks in the folder."""
        return self.path if self.is_file else find_weights(self.path, stems, what)


def locate(path: str | os.PathLike, component: str) -> Located:
    """A weight file, a component folder, or a repo holding ``<component>/`` (a folder without a config.json)."""
    path = Path(path)
    if not path.exists():
        raise SanaError(f"{path}: not found")
    if path.is_dir() and (path / component).is_dir() and not (path / "config.json").exists():
        return Located(path / component, repo=path)
    return Located(path)


def find_weights(folder: Path, stems: tuple[str, ...], what: str) -> Path:
    """The weights in a component folder; ``what`` names the component in the error when there are none."""
    for stem in stems:
        for v in VARIANTS:
            # diffusers and transformers name a variant's index <stem>.safetensors.index<v>.json and its shards
            # <stem><v>-0000i-of-0000n.safetensors; <stem><v>.safetensors.index.json is taken too
            names = (f"{stem}.safetensors.index{v}.json", f"{stem}{v}.safetensors.index.json", f"{stem}{v}.safetensors",
                     f"{stem}{v}.bin")
            for name in dict.fromkeys(names):
                if (folder / name).is_file():
                    return folder / name
    loose = sorted(folder.glob("*.safetensors"))
    if len(loose) == 1:
        return loose[0]
    expected = " or ".join(f"{stem}[{'|'.join(VARIANTS[1:])}].safetensors" for stem in stems)
    raise SanaError(f"{folder}: no {what} weights in this folder (found: {listing(folder)}); expected {expected}, "
                    "its sharded .safetensors.index.json, or a single *.safetensors file")


def listing(folder: Path) -> str:
    """A folder's entries for an error message (folders end in '/'; at most 20 named)."""
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    return ", ".join(names[:20]) + (f", … ({len(names)} entries)" if len(names) > 20 else "") if names else "nothing"


# --- configs -------------------------------------------------------------------------------------------------------

def read_json(path: Path) -> dict:
    """A JSON object from a file; a SanaError naming the file when it is not valid JSON or not an object."""
    try:
        obj = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SanaError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(obj, dict):
        raise SanaError(f"{path}: expected a JSON object, found {type(obj).__name__}")
    return obj
