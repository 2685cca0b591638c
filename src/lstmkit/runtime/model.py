"""A whole exported model in NumPy: embedding, the layer stack over time, pooling, the head.

It mirrors :class:`lstmkit.models.SequenceModel` in evaluation mode: dropout off, zoneout as its
expectation, padding past ``lengths`` never reaching an output or a state, the reverse direction
starting at each sequence's own last element.

Legend: B batch, T time, I input, O output, L layers, D directions.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from lstmkit.runtime.cells import cell_input, family, output_width, state_shapes
from lstmkit.runtime.quant import dequantize_arrays

FORMAT = "lstmkit.runtime/2"
FORMATS = ("lstmkit.runtime/1", FORMAT)
"""What :func:`load` reads: format 1 named the cell family ``mode`` and held every family's
fields."""
CONFIG_KEY = "__config__"
"""The .npz entry holding the JSON config, as UTF-8 bytes (uint8), so no pickle is needed."""


def load(path: str | Path) -> Model:
    """The model that ``lstmkit export --runtime`` wrote to ``path`` (an .npz file)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"runtime model: no such file: {path}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
    except (OSError, ValueError) as error:
        raise ValueError(f"runtime model: expected an .npz file, {path} is not one "
                         f"({error})") from None
    if CONFIG_KEY not in arrays:
        raise ValueError(f"runtime model: expected a {CONFIG_KEY} entry in {path}, got none")
    header = json.loads(arrays.pop(CONFIG_KEY).tobytes().decode("utf-8"))
    if header.get("format") not in FORMATS:
        raise ValueError(f"runtime model: expected format {FORMAT!r}, got "
                         f"{header.get('format')!r} in {path}")
    config = header["model"]
    if header["format"] != FORMAT:
        cell = dict(config["layer"]["cell"])
        cell["family"] = cell.pop("mode")
        config = {**config, "layer": {**config["layer"], "cell": cell}}
    if "embedding_dim" in config["layer"]:  # an xLSTM block stack
        from lstmkit.runtime.xlstm import xLSTMModel

        return xLSTMModel(config, arrays, header.get("meta", {}))
    return Model(config, arrays, header.get("meta", {}))


class Model:
    """An lstmkit SequenceModel's function, NumPy only.

    Args:
        config: ``ModelConfig.to_dict()``.
        arrays: the model's ``state_dict`` as arrays, same names; int8 matrices with their
            ``_scale`` (lstmkit.runtime.quant) are dequantised here.
        meta: what the checkpoint carried besides the config.

    Shape: x (B, T, I) floats or (B, T) token ids -> (B, T, O), or (B, O) when pooled; the state
    is (h, c) for an LSTM, h otherwise, each (L*D, B, size) as torch.nn's.
    """

    def __init__(self, config: dict, arrays: dict[str, np.ndarray], meta: dict | None = None):
        self.config, self.meta = config, meta or {}
        arrays = dequantize_arrays(arrays)
        layer = config["layer"]
        self.cell, self.num_layers = layer["cell"], layer["num_layers"]
        self.family = family(self.cell)  # refuses a family without a NumPy step
        self.directions = 2 if layer["bidirectional"] else 1
        self.zoneout = layer["zoneout"]
        self.dtype = arrays["head.weight"].dtype
        self.embedding = arrays.get("embedding.weight")
        self.head_weight, self.head_bias = arrays["head.weight"], arrays["head.bias"]
        self.packed: dict[int, np.ndarray] = {}  # the fused stepper's weights, per layer
        self.weights = [[_cell_arrays(arrays, layer, direction)
                         for direction in range(self.directions)]
                        for layer in range(self.num_layers)]

    def layer_cell(self, layer: int) -> dict:
        if layer == 0:
            return self.cell
        return {**self.cell, "input_size": output_width(self.cell) * self.directions}

    def init_state(self, batch: int = 1):
        """Zeros, as torch.nn's: (L*D, B, size) per state array."""
        leading = (self.num_layers * self.directions, batch)
        state = tuple(np.zeros(leading + shape, self.dtype) for shape in state_shapes(self.cell))
        return _as_state(state)

    def forward(self, x, state=None, lengths=None):
        """Run whole sequences; returns ``(output, state)``; see the class docstring."""
        x = self._features(np.asarray(x))
        batch, steps = x.shape[:2]
        if lengths is not None:
            lengths = np.asarray(lengths, np.int64)
            if lengths.shape != (batch,) or lengths.min() < 1 or lengths.max() > steps:
                raise ValueError(f"lengths: expected shape ({batch},) with values in 1..{steps}, "
                                 f"got {lengths.tolist()}")
        state = self.init_state(batch) if state is None else state
        y, state = self._stack(x.transpose(1, 0, 2), _tensors(state), lengths)  # y (T, B, D*P)
        return self._head(y.transpose(1, 0, 2), lengths), state

    __call__ = forward

    def step(self, x_t, state=None):
        """One step for a batch: x_t (B, I) or (B,) ids -> ``(output (B, O), state)``."""
        if self.config["pooling"] not in ("none", "last") or self.directions == 2:
            raise ValueError("step: expected a unidirectional model with pooling 'none' or "
                             "'last', got one that needs the whole sequence")
        x = self._features(np.asarray(x_t)[:, None])
        batch = x.shape[0]
        state = self.init_state(batch) if state is None else state
        y, state = self._stack(x.transpose(1, 0, 2), _tensors(state), None)
        return y[0] @ self.head_weight.T + self.head_bias, state

    def stepper(self, precision: str | None = None):
        """A single stream with preallocated buffers: the fastest per-step path (``precision``:
        see :class:`~lstmkit.runtime.Stepper`)."""
        from lstmkit.runtime.fast import Stepper

        return Stepper(self, precision)

    def _features(self, x):
        if self.embedding is None:
            if x.ndim != 3 or x.shape[-1] != self.cell["input_size"]:
                raise ValueError(f"x: expected shape (B, T, {self.cell['input_size']}), got "
                                 f"{x.shape}")
            return x.astype(self.dtype, copy=False)
        if x.ndim != 2 or not np.issubdtype(x.dtype, np.integer):
            raise ValueError(f"x: expected integer token ids of shape (B, T), got {x.dtype} "
                             f"{x.shape}")
        return self.embedding[x]

    def _stack(self, x, initial, lengths):
        """The layers over time. Shape: x (T, B, I); initial tensors (L*D, B, size)."""
        steps = x.shape[0]
        valid = None if lengths is None else (np.arange(steps)[:, None] < lengths)[..., None]
        finals = [[] for _ in initial]
        for layer in range(self.num_layers):
            cfg, outputs = self.layer_cell(layer), []
            for direction in range(self.directions):
                k = layer * self.directions + direction
                s0 = tuple(t[k] for t in initial)
                xs = x if direction == 0 else _reverse(x, lengths)
                y, s = self._scan(cfg, self.weights[layer][direction], xs, s0, valid)
                outputs.append(y if direction == 0 else _reverse(y, lengths))
                for acc, t in zip(finals, s):
                    acc.append(t)
            x = np.concatenate(outputs, axis=-1)
        state = tuple(np.stack(acc) for acc in finals)
        return x, _as_state(state)

    def _scan(self, cfg, w, x, state, valid):
        step, z, apart = self.family.step, self.zoneout, self.family.output is not None
        gx = cell_input(x, w, cfg)  # (T, B, G*H)
        outputs = []
        for t in range(x.shape[0]):
            out, new = step(gx[t], state, w, cfg) if apart else (None, step(gx[t], state, w, cfg))
            if z:
                new = tuple(z * prev + (1.0 - z) * cur for prev, cur in zip(state, new))
            if valid is not None:
                new = tuple(np.where(_rows(valid[t], cur), cur, prev)
                            for prev, cur in zip(state, new))
                out = new[0] if out is None else out
                outputs.append(out * _rows(valid[t], out))
            else:
                outputs.append(new[0] if out is None else out)
            state = new
        return np.stack(outputs), state

    def _head(self, y, lengths):
        """Pooling over valid steps, then the linear head. Shape: y (B, T, D*P)."""
        pooling, (batch, steps) = self.config["pooling"], y.shape[:2]
        lengths = np.full(batch, steps) if lengths is None else lengths
        if pooling == "last":
            pooled = y[np.arange(batch), lengths - 1]
            if self.directions == 2:  # the reverse direction ends its pass at step 0
                half = y.shape[-1] // 2
                pooled = np.concatenate([pooled[:, :half], y[:, 0, half:]], axis=-1)
            y = pooled
        elif pooling in ("mean", "max"):
            valid = (np.arange(steps)[None, :] < lengths[:, None])[..., None]
            if pooling == "mean":
                y = (y * valid).sum(1) / lengths[:, None].astype(y.dtype)
            else:
                y = np.where(valid, y, -np.inf).max(1)
        return y @ self.head_weight.T + self.head_bias


def _cell_arrays(arrays: dict, layer: int, direction: int) -> dict:
    suffix = f"_l{layer}" + ("_reverse" if direction else "")
    prefix = "rnn."
    return {name[len(prefix):-len(suffix)]: value for name, value in arrays.items()
            if name.startswith(prefix) and name.endswith(suffix)}


def _rows(valid, like):
    """valid (B, 1) shaped to broadcast over a state array (B, ...) of any rank."""
    return valid.reshape(valid.shape[:1] + (1,) * (like.ndim - 1))


def _as_state(arrays: tuple):
    """A state as torch.nn gives it: a tuple of several arrays, or the one array itself."""
    return arrays if len(arrays) > 1 else arrays[0]


def _tensors(state) -> tuple:
    return tuple(state) if isinstance(state, (tuple, list)) else (state,)


def _reverse(x, lengths):
    """Each sequence of x (T, B, F) reversed within its own length, padding left in place."""
    if lengths is None:
        return x[::-1]
    t = np.arange(x.shape[0])[:, None]
    index = np.where(t < lengths[None, :], lengths[None, :] - 1 - t, t)  # (T, B)
    return np.take_along_axis(x, index[..., None], axis=0)
