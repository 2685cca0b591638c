import pytest

from lstmkit.tasks import sequences


def test_japanese_vowels_have_unequal_lengths():
    data = sequences.load_dataset("JapaneseVowels")
    assert (len(data.train), len(data.test), data.channels) == (270, 370, 12)
    lengths = {len(s) for s in data.train + data.test}
    assert min(lengths) == 7 and max(lengths) == 29
    assert data.classes == tuple(str(c) for c in range(1, 10))


def test_digits_read_row_by_row():
    data = sequences.load_dataset("digits")
    assert data.train[0].shape == (8, 8) and len(data.train) + len(data.test) == 1797


def test_unknown_name():
    with pytest.raises(ValueError, match="expected one of"):
        sequences.load_dataset("MNIST")
