"""A NumPy-only runtime for exported lstmkit models, for devices where torch is too heavy.

``lstmkit export CHECKPOINT --runtime model.npz`` writes the file; here it loads without torch::

    import lstmkit.runtime
    model = lstmkit.runtime.load("model.npz")
    y, state = model.forward(x)          # whole sequences, (B, T, I) -> (B, T, O)
    y_t, state = model.step(x_t, state)  # one step for a batch
    stepper = model.stepper()            # one stream, preallocated: the fastest step
    y_t = stepper(x_t)

Nothing in this package imports torch.
"""

from lstmkit.runtime.fast import Stepper
from lstmkit.runtime.model import FORMAT, Model, load

__all__ = ["FORMAT", "Model", "Stepper", "load"]
