import numpy as np
import pandas as pd
import pytest

from lstmkit.tasks import examples, sequence_files


def test_npy_folder_long_table_parquet_and_npz_read_the_same_sequences(tmp_path):
    seqs, labels = examples.waves(12)
    folder = tmp_path / "npy"
    folder.mkdir()
    for i, s in enumerate(seqs):
        np.save(folder / f"s{i:02d}.npy", s)
    pd.DataFrame({"file": [f"s{i:02d}.npy" for i in range(12)], "label": labels}).to_csv(
        folder / "labels.csv", index=False)
    long = pd.DataFrame([{"id": f"s{i:02d}", "time": t, "a": x, "b": y, "label": labels[i]}
                         for i, s in enumerate(seqs) for t, (x, y) in enumerate(s)])
    long.sample(frac=1, random_state=0).to_csv(tmp_path / "long.csv", index=False)  # shuffled
    long.to_parquet(tmp_path / "long.parquet")
    examples.write_waves_npz(tmp_path / "w.npz", count=12)
    for path in (folder, tmp_path / "long.csv", tmp_path / "long.parquet", tmp_path / "w.npz"):
        found = sequence_files.read(path)
        assert found.labels == labels, path
        for a, b in zip(found.sequences, seqs):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_bad_user_data(tmp_path):
    (tmp_path / "t.csv").write_text("id,a,label\n1,0.5,x\n1,0.7,y\n")
    with pytest.raises(ValueError, match="one label per sequence.*--labelling step"):
        sequence_files.read(tmp_path / "t.csv")
    (tmp_path / "u.csv").write_text("id,a,label\n1,0.5,x\n1,oops,x\n")
    with pytest.raises(ValueError, match="expected numbers in feature column 'a', got 'oops'"):
        sequence_files.read(tmp_path / "u.csv")
    folder = examples.write_waves(tmp_path / "w", count=4)
    (folder / "labels.csv").write_text("file,label\nseq000.csv,sine\n")
    with pytest.raises(ValueError, match="expected a label for every file"):
        sequence_files.read(folder)
