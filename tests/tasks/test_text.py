import pytest

from lstmkit.tasks import text


def test_vocabulary_round_trip_and_unknown_characters():
    vocab = text.Vocabulary("hello")
    assert len(vocab) == 5  # e, h, l, o and the unknown id
    assert vocab.decode(vocab.encode("hole")) == "hole"
    assert vocab.encode("hex").tolist()[-1] == 0


def test_files_empty_or_not_utf8(tmp_path):
    (tmp_path / "empty.txt").write_text("  \n")
    with pytest.raises(ValueError, match="empty file"):
        text.read_text(tmp_path / "empty.txt")
    (tmp_path / "latin.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(ValueError, match="expected UTF-8"):
        text.read_text(tmp_path / "latin.txt")
    with pytest.raises(FileNotFoundError):
        text.read_text(tmp_path / "absent.txt")


def test_king_james_in_canonical_order():
    bible = text.king_james()
    assert len(bible) == 4_137_820 and bible.count("\n") == 31_102  # one verse per line
    assert bible.startswith("In the beginning God created the heaven and the earth.\n")
    assert bible.rstrip().endswith("Amen.")
