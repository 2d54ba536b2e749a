"""qgraph.data: reading GLUE-style files, the vendored SST-2 sample, tokens and batches."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
import torch

from qgraph.data import batches, encode, load_sst2, read_examples, sst2_sample
from qgraph.errors import DataError

SHARED_SST2 = Path(__file__).resolve().parents[2] / "shared" / "data" / "sst2"


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_the_vendored_sample() -> None:
    train, dev = sst2_sample()
    assert (len(train), len(dev)) == (2000, 872)
    assert set(train.labels) == set(dev.labels) == {0, 1}
    assert dev.texts[0] == "it 's a charming and often affecting journey ."
    assert train.num_labels == 2 and not train.skipped


@pytest.mark.skipif(not SHARED_SST2.is_dir(), reason="shared SST-2 data absent")
def test_the_full_sst2_from_a_folder() -> None:
    train, dev = load_sst2(SHARED_SST2)
    assert (len(train), len(dev)) == (67_349, 872)
    assert dev.texts == sst2_sample()[1].texts  # the sample ships the whole dev split


def test_malformed_rows_name_file_and_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "d.tsv", "sentence\tlabel\ngood\t1\nbad\t0\textra\nfine\t0\n")
    with pytest.raises(DataError, match=r"d\.tsv:3: 3 fields where the header has 2"):
        read_examples(path)
    examples = read_examples(path, skip_malformed=True)
    assert examples.texts == ["good", "fine"] and len(examples.skipped) == 1
    assert "d.tsv:3" in examples.skipped[0]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("sentence\tlabel\ngood\tpositive\n", r":2: label 'positive' is not an integer"),
        ("sentence\tlabel\n \t1\n", r":2: empty text"),
        ("text\ty\ngood\t1\n", r":1: no text column 'sentence'; the header has \['text', 'y'\]"),
        ("", "the file is empty"),
        ("sentence\tlabel\n", "no rows to read"),
    ],
    ids=["label", "empty-text", "column", "empty-file", "no-rows"],
)
def test_bad_files(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(DataError, match=message):
        read_examples(_write(tmp_path, "d.tsv", body))


def test_csv_with_quotes_named_columns_and_gzip(tmp_path: Path) -> None:
    body = 'id,review,stars\n1,"great, really great",1\n2,"""meh"" at best",0\n'
    path = tmp_path / "r.csv.gz"
    path.write_bytes(gzip.compress(body.encode()))
    examples = read_examples(path, text_column="review", label_column="stars")
    assert examples.texts == ["great, really great", '"meh" at best']
    assert examples.labels == [1, 0]


def test_columns_by_index_without_header(tmp_path: Path) -> None:
    path = _write(tmp_path, "d.tsv", "1\tgood film\n0\tbad film\n")
    examples = read_examples(path, text_column=1, label_column=0, header=False)
    assert examples.texts == ["good film", "bad film"] and examples.labels == [1, 0]
    with pytest.raises(DataError, match="has no header; pass its index"):
        read_examples(path, header=False)


def test_paths_that_do_not_fit(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no data file"):
        read_examples(tmp_path / "missing.tsv")
    with pytest.raises(DataError, match="cannot tell the delimiter"):
        read_examples(_write(tmp_path, "d.txt", "a\tb\n"))
    with pytest.raises(DataError, match=r"has no train\.tsv"):
        load_sst2(tmp_path)


def test_encode_uses_minilm_wordpiece() -> None:
    ids = encode(["a charming journey", "x " * 300], max_length=16)
    assert ids[0][0] == 101 and ids[0][-1] == 102  # [CLS] ... [SEP]
    assert len(ids[1]) == 16
    with pytest.raises(DataError, match="no tokenizer folder"):
        encode(["a"], tokenizer="/no/such/tokenizer")


def test_batches_pad_bucket_and_cover_every_row() -> None:
    lengths = [3, 9, 4, 12, 5, 7, 2, 11, 6, 8] * 10
    ids = [[5] * n for n in lengths]
    labels = [i % 2 for i in range(len(ids))]
    seen = 0
    padded = 0
    for batch in batches(ids, labels, 8, seed=1):
        assert batch["input_ids"].shape == batch["attention_mask"].shape
        rows = batch["attention_mask"].sum(dim=1)
        assert torch.equal(batch["input_ids"] != 0, batch["attention_mask"].bool())
        padded += int((batch["attention_mask"] == 0).sum())
        seen += len(rows)
    assert seen == len(ids)
    unbucketed = 0
    for start in range(0, len(ids), 8):
        chunk = lengths[start : start + 8]
        unbucketed += sum(max(chunk) - n for n in chunk)
    assert padded < unbucketed / 4  # grouping similar lengths pads far less
    first = [b["labels"].tolist() for b in batches(ids, labels, 8, seed=1)]
    assert first == [b["labels"].tolist() for b in batches(ids, labels, 8, seed=1)]
    with pytest.raises(DataError, match="batch_size must be"):
        next(batches(ids, labels, 0))
