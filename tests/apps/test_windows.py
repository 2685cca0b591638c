import numpy as np
import pytest
import torch

from lstmkit.apps import windows
from lstmkit.apps.windows import Layout, Scaler, make_windows, pinball_loss, to_units


def _values(n=40, columns=3, seed=0):
    rng = np.random.default_rng(seed)
    return np.cumsum(rng.normal(size=(n, columns)), 0) + 50


def test_scaler_round_trip():
    values = _values()
    scaler = Scaler.fit(values[:20])
    np.testing.assert_allclose(scaler.transform(values[:20]).mean(0), 0, atol=1e-12)
    np.testing.assert_allclose(scaler.inverse(scaler.transform(values)), values)
    assert Scaler.from_dict(scaler.to_dict()).mean.tolist() == scaler.mean.tolist()


@pytest.mark.parametrize("window_norm", [True, False])
@pytest.mark.parametrize("future", [0, 1])
@pytest.mark.parametrize("base", ["none", "naive", "seasonal"])
def test_labels_decode_back_to_the_data(window_norm, future, base):
    # a model that answered exactly its labels must give back the actual values
    values = _values()
    scaler = Scaler.fit(values[:25])
    layout = Layout(context=6, horizon=4, targets=2 - future, past=1, future=future,
                    quantiles=(0.1, 0.5, 0.9), window_norm=window_norm, base=base, season=3)
    origins = np.array([6, 10, 30])
    windows = make_windows(scaler.transform(values), origins, layout)
    assert windows.x.shape == (3, layout.steps, layout.input_size)
    perfect = windows.y.unsqueeze(-1).expand(-1, -1, -1, 3).reshape(3, -1)
    decoded = to_units(perfect, windows, scaler, layout)  # (S, H, K, Q)
    truth = values[origins[:, None] + np.arange(4)][:, :, :layout.targets]
    for q in range(3):
        np.testing.assert_allclose(decoded[..., q], truth, rtol=1e-5)
    assert float(pinball_loss(perfect, windows.y, layout)) == pytest.approx(0.0, abs=1e-7)


def test_future_covariates_are_visible_and_targets_are_not():
    values = _values(columns=2)
    layout = Layout(5, 3, targets=1, past=0, future=1, quantiles=(0.5,))
    windows = make_windows(values, np.array([10]), layout)
    ahead = windows.x[0, 5:]  # the horizon part: (H, K + F + 1)
    assert torch.all(ahead[:, 0] == 0) and torch.all(ahead[:, 2] == 0)
    torch.testing.assert_close(ahead[:, 1], torch.tensor(values[10:13, 1], dtype=torch.float32))


def test_window_past_the_end_has_no_labels():
    values = _values()
    layout = Layout(6, 4, 3, 0, 0, (0.5,))
    assert make_windows(values, np.array([len(values)]), layout).y is None


@pytest.mark.parametrize("base, expected", [("naive", [9, 9, 9, 9, 9]),
                                            ("seasonal", [7, 8, 9, 7, 8])])
def test_a_silent_model_gives_its_base(base, expected):
    values = np.arange(1.0, 21.0)[:, None]  # 1, 2, ..., 20
    scaler = Scaler.fit(values[:10])
    layout = Layout(6, 5, 1, 0, 0, (0.5,), base=base, season=3)
    windows = make_windows(scaler.transform(values), np.array([9]), layout)
    decoded = to_units(torch.zeros(1, 5), windows, scaler, layout)
    np.testing.assert_allclose(decoded[0, :, 0, 0], expected, rtol=1e-5)


def test_seasonal_base_needs_a_season_of_context():
    with pytest.raises(ValueError, match="at least one season"):
        Layout(6, 4, 1, 0, 0, (0.5,), base="seasonal", season=12)


def test_conformal_offsets_cover_the_calibration_windows():
    rng = np.random.default_rng(0)
    y = rng.standard_normal((50, 3, 2))  # (S, H, K)
    median = np.zeros_like(y)
    for spread in (0.01, 5.0):  # far too narrow, far too wide
        q = np.stack([median - spread, median, median + spread], -1)
        calibrated = windows.widen(q, windows.conformal_offsets(q, y, (0.1, 0.5, 0.9)))
        inside = (y >= calibrated[..., 0]) & (y <= calibrated[..., 2])
        assert np.all(inside.mean(0) >= 0.8)  # the finite-sample guarantee on its own windows
        assert np.all(inside.mean(0) <= 0.8 + 2 / 50)  # and no wider than it needs
        assert np.all(calibrated[..., 0] <= calibrated[..., 1])
