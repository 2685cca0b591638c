"""The engine and the server with xLSTM block stacks: each block's convolution window and cell
state are a stream's state, carried, evicted, saved and restored like a layer's."""

import numpy as np
import pytest
import torch

from lstmkit.checkpoint import save
from lstmkit.streaming import StreamEngine, StreamSnapshot, load_snapshots
from tests.tiny_models import xlstm_charlm, xlstm_stack


def _offline(model, x):
    with torch.no_grad():
        features = x[None] if model.embedding is None else model.embedding(x[None])
        return model.head(model.rnn(features)[0])[0]


def test_the_state_of_a_stack_is_its_leaves_evicted_and_restored_exactly():
    model = xlstm_stack(torch.float64)
    engine = StreamEngine(model)
    x = torch.randn(9, 3, dtype=torch.float64)
    sid = engine.open()
    head = engine.push(sid, x[:4])
    snapshot = engine.evict(sid)
    # per block: the convolution window (K - 1, F), then the cell's parts, each with axis 0 of 1
    U, E, K = model.config.layer.mlstm_inner, 8, model.config.layer.conv_kernel
    assert [tuple(t.shape) for t in snapshot.state] == [
        (1, K - 1, U), (1, 2, U // 2, U // 2), (1, 2, U // 2), (1, 2),
        (1, K - 1, E), (1, E), (1, E), (1, E), (1, E)]
    tail = engine.push(sid, x[4:])  # restores the parked stream
    torch.testing.assert_close(torch.cat([head, tail]), _offline(model, x), rtol=0, atol=1e-12)
    copy = engine.open("copy", snapshot)
    torch.testing.assert_close(engine.push(copy, x[4:]), tail, rtol=0, atol=0)


def test_a_stack_refuses_what_a_stream_cannot_compute():
    with pytest.raises(ValueError, match="expected pooling 'none' or 'last', got 'mean'"):
        StreamEngine(xlstm_stack(pooling="mean", output_size=2))
    engine = StreamEngine(xlstm_stack())
    with pytest.raises(ValueError, match=r"snapshot: expected state shapes \(\(1, 3, 16\), "):
        engine.open(snapshot=StreamSnapshot((torch.zeros(1, 3, 8),), 0))
    with pytest.raises(ValueError, match=r"x_chunk: expected shape \(T, 3\)"):
        engine.push(engine.open(), torch.zeros(2, 4))


def test_a_charlm_checkpoint_with_an_xlstm_backbone_is_served_and_resumed(tmp_path):
    testclient = pytest.importorskip("starlette.testclient")
    import lstmkit
    from lstmkit.streaming.adapters import for_model
    from lstmkit.streaming.server import ServerConfig, create_app
    from lstmkit.tasks.text import Vocabulary

    vocab = Vocabulary("abcdefghij")
    save(tmp_path / "m.safetensors", xlstm_charlm(), app="charlm", vocab=vocab.chars)
    model = lstmkit.load(tmp_path / "m.safetensors")  # as `lstmkit serve` loads it
    state = str(tmp_path / "streams.safetensors")
    text, replies = "abcabdjjia", []
    for part in (text[:4], text[4:]):  # the second server resumes the first one's stream
        app = create_app(StreamEngine(model), ServerConfig(state_path=state), for_model(model))
        with testclient.TestClient(app, base_url="http://127.0.0.1") as client:
            client.post("/streams", json={"id": "t"})
            replies.append(client.post("/streams/t", json={"x": part}).json())
    assert load_snapshots(state)[0]["t"].steps == len(text)
    logits = _offline(model, vocab.encode(text))
    probs = replies[0]["probs"] + replies[1]["probs"]
    np.testing.assert_allclose(probs, torch.softmax(logits.double(), -1), rtol=1e-5, atol=1e-6)
    assert replies[0]["next"] + replies[1]["next"] == vocab.decode(logits.argmax(-1))
