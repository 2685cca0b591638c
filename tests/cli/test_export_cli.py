import numpy as np
import pytest
import torch

import lstmkit
import lstmkit.runtime
from lstmkit.checkpoint import save
from lstmkit.cli import main
from tests.tiny_models import charlm, forecaster

ort = pytest.importorskip("onnxruntime")


@pytest.mark.parametrize("factory", [forecaster, charlm])
def test_export_round_trips_through_onnxruntime_and_the_numpy_runtime(factory, tmp_path,
                                                                      capsys):
    model = factory()
    save(tmp_path / "m.safetensors", model, note="kept")
    code = main(["export", str(tmp_path / "m.safetensors"), "--onnx", str(tmp_path / "m.onnx"),
                 "--runtime", str(tmp_path / "m.npz")])
    assert code == 0 and "wrote" in capsys.readouterr().out
    if model.config.vocab_size:
        x = torch.randint(0, model.config.vocab_size, (2, 7))
    else:
        x = torch.randn(2, 7, model.config.layer.cell.input_size)
    lengths = torch.tensor([7, 3])
    with torch.no_grad():
        want = model(x, lengths=lengths)[0].numpy()
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    h0 = [t.numpy() for t in model.init_state(2)]
    got = session.run(["output"], {"input": x.numpy(), "lengths": lengths.numpy(),
                                   "h0": h0[0], "c0": h0[1]})[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    runtime = lstmkit.runtime.load(tmp_path / "m.npz")
    assert runtime.meta == {"note": "kept"}
    np.testing.assert_allclose(runtime.forward(x.numpy(), lengths=lengths.numpy())[0], want,
                               rtol=1e-5, atol=1e-6)


def test_export_int8(tmp_path, capsys):
    model = forecaster()
    save(tmp_path / "m.safetensors", model)
    code = main(["export", str(tmp_path / "m.safetensors"), "--int8", "--onnx",
                 str(tmp_path / "q.onnx"), "--runtime", str(tmp_path / "q.npz")])
    assert code == 0 and "wrote" in capsys.readouterr().out
    import onnx

    used = {node.op_type for node in onnx.load(str(tmp_path / "q.onnx")).graph.node}
    assert "DynamicQuantizeLSTM" in used and "LSTM" not in used
    with np.load(tmp_path / "q.npz") as archive:
        assert archive["rnn.weight_ih_l0"].dtype == np.int8
    x = torch.randn(2, 7, model.config.layer.cell.input_size)
    with torch.no_grad():
        want = lstmkit.quantize_dynamic(model, backend="reference")(x)[0].numpy()
    got = lstmkit.runtime.load(tmp_path / "q.npz").forward(x.numpy())[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_export_errors_are_one_line(tmp_path, capsys):
    assert main(["export", str(tmp_path / "absent.safetensors"), "--onnx", "x.onnx"]) == 2
    assert "no such file" in capsys.readouterr().err
    save(tmp_path / "m.safetensors", forecaster())
    assert main(["export", str(tmp_path / "m.safetensors")]) == 2
    assert "expected --onnx OUT and/or --runtime OUT" in capsys.readouterr().err


def test_serve_rejects_bad_options(tmp_path, capsys):
    assert main(["serve", str(tmp_path / "m.safetensors"), "--port", "70000"]) == 2
    assert "port: expected 0..65535" in capsys.readouterr().err


def test_export_of_an_xlstm_checkpoint(tmp_path, capsys):
    """`lstmkit export` on a checkpoint with an xLSTM backbone: both files, equal to the model,
    the graph's state inputs named per block."""
    from lstmkit.tasks.text import Vocabulary
    from tests.tiny_models import xlstm_charlm

    model = xlstm_charlm()
    save(tmp_path / "m.safetensors", model, app="charlm", vocab=Vocabulary("abcdefghij").chars)
    code = main(["export", str(tmp_path / "m.safetensors"), "--onnx", str(tmp_path / "m.onnx"),
                 "--runtime", str(tmp_path / "m.npz")])
    assert code == 0 and capsys.readouterr().out.count("wrote") == 2
    x, lengths = torch.randint(0, 11, (2, 7)), torch.tensor([7, 3])
    with torch.no_grad():
        want = model(x, lengths=lengths)[0].numpy()
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    zeros = {i.name: np.zeros([2, *i.shape[1:]], np.float32) for i in session.get_inputs()[2:]}
    assert sorted(zeros)[:2] == ["b0_C0", "b0_conv0"]
    got = session.run(["output"], {"input": x.numpy(), "lengths": lengths.numpy(), **zeros})[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    runtime = lstmkit.runtime.load(tmp_path / "m.npz")
    np.testing.assert_allclose(runtime.forward(x.numpy(), lengths=lengths.numpy())[0], want,
                               rtol=1e-5, atol=1e-6)
