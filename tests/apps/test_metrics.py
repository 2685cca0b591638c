import math

import numpy as np
import pytest

from lstmkit.apps import metrics


def test_point_errors_by_hand():
    actual, forecast = [1.0, 2.0, 4.0], [2.0, 2.0, 1.0]
    assert metrics.mae(actual, forecast) == pytest.approx((1 + 0 + 3) / 3)
    assert metrics.rmse(actual, forecast) == pytest.approx(math.sqrt((1 + 0 + 9) / 3))
    # 200 |y - f| / (|y| + |f|): 200/3, 0, 600/5
    assert metrics.smape(actual, forecast) == pytest.approx((200 / 3 + 0 + 120) / 3)
    assert metrics.smape([0.0], [0.0]) == 0.0


def test_mase_scales_by_the_in_sample_seasonal_naive_error():
    history = [1.0, 3.0, 2.0, 5.0, 4.0]
    # season 2: |2-1|, |5-3|, |4-2| -> mean 5/3; season 1: 2, 1, 3, 1 -> 7/4
    assert metrics.mase_scale(history, 2) == pytest.approx(5 / 3)
    assert metrics.mase([6.0, 6.0], [5.0, 8.0], history, 1) == pytest.approx(1.5 / (7 / 4))
    with pytest.raises(ValueError, match="more than season"):
        metrics.mase_scale([1.0, 2.0], 2)


def test_coverage_and_pinball():
    assert metrics.coverage([1, 2, 3, 4], [0, 2.5, 2, 5], [2, 3, 3, 6]) == 0.5
    # q=0.9: under-forecast by 2 costs 1.8, over-forecast by 1 costs 0.1
    assert metrics.pinball([3.0, 0.0], [1.0, 1.0], 0.9) == pytest.approx((1.8 + 0.1) / 2)


def test_classification_metrics_by_hand():
    actual, predicted = np.array([0, 0, 1, 1, 2]), np.array([0, 1, 1, 1, 0])
    matrix = metrics.confusion_matrix(actual, predicted, 3)
    assert matrix.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    assert metrics.accuracy(actual, predicted) == pytest.approx(3 / 5)
    # F1: class 0: 2*1/(2+2)=0.5; class 1: 2*2/(3+2)=0.8; class 2: 0
    assert metrics.macro_f1(actual, predicted, 3) == pytest.approx((0.5 + 0.8 + 0) / 3)


def test_bits_per_char():
    assert metrics.bits_per_char(math.log(2)) == pytest.approx(1.0)
