"""Objective functions: mse (with NaN targets) and Regularize, against numpy computations and
hand-derived gradients."""

import numpy as np
import pytest
import tensorflow as tf
from nengo.exceptions import ValidationError

from nengo_dl_nb.objectives import Regularize, mse


def value_and_grad(f, x, *args):
    x = tf.Variable(x)
    with tf.GradientTape() as tape:
        y = f(x, *args)
    return y.numpy(), tape.gradient(y, x).numpy()


# -- mse ------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_mse_value_and_gradient(dtype):
    rng = np.random.RandomState(0)
    out = rng.randn(4, 5, 3).astype(dtype)
    tgt = rng.randn(4, 5, 3).astype(dtype)
    value, grad = value_and_grad(mse, out, tgt)
    assert value.dtype == dtype
    assert np.isclose(value, np.mean((out - tgt) ** 2), rtol=1e-5)
    assert np.allclose(grad, 2 * (out - tgt) / out.size, rtol=1e-5)


def test_mse_nan_targets():
    rng = np.random.RandomState(1)
    out = rng.randn(3, 10, 2).astype(np.float32)
    tgt = rng.randn(3, 10, 2).astype(np.float32)
    missing = rng.rand(*tgt.shape) < 0.4
    tgt[missing] = np.nan
    value, grad = value_and_grad(mse, out, tgt)
    # hand computation: NaN targets are zero error, the mean is over all elements
    err = np.where(missing, 0.0, out - np.nan_to_num(tgt))
    assert np.isclose(value, np.sum(err**2) / out.size, rtol=1e-5)
    assert np.all(np.isfinite(grad))
    assert np.all(grad[missing] == 0)
    assert np.allclose(grad, 2 * err / out.size, rtol=1e-5)


def test_mse_all_nan_targets():
    out = np.ones((2, 3, 1), np.float32)
    value, grad = value_and_grad(mse, out, np.full_like(out, np.nan))
    assert value == 0 and np.all(grad == 0)


def test_mse_gradient_wrt_targets_is_finite():
    out = tf.constant([[1.0, 2.0]])
    tgt = tf.Variable([[np.nan, 0.5]], dtype=tf.float32)
    with tf.GradientTape() as tape:
        loss = mse(out, tgt)
    g = tape.gradient(loss, tgt).numpy()
    assert np.allclose(g, [[0.0, -2 * (2.0 - 0.5) / 2]])


def test_mse_in_tf_function_and_numpy_inputs():
    f = tf.function(mse)
    out = np.arange(6, dtype=np.float32).reshape(1, 2, 3)
    tgt = np.array([[[0, np.nan, 2], [np.nan, np.nan, 0]]])  # float64, cast to outputs' dtype
    assert np.isclose(f(out, tgt.astype(np.float32)).numpy(), 25 / 6)
    assert np.isclose(mse(out, tgt).numpy(), 25 / 6)


# -- Regularize: values ---------------------------------------------------------------------

def np_regularize(x, order, axis, weight):
    "Independent reference: numpy.linalg.norm per timestep, mean over the rest."
    b, t = x.shape[:2]
    if axis is None:
        norms = np.linalg.norm(x.reshape(b, t, -1), ord=order, axis=2)
    else:
        norms = np.linalg.norm(x, ord=order, axis=axis + 2 if axis >= 0 else axis)
    return np.mean(norms) * (1 if weight is None else weight)


@pytest.mark.parametrize("order", [1, 2, 3, 0.5, np.inf])
@pytest.mark.parametrize("axis", [None, 0, 1, -1])
@pytest.mark.parametrize("weight", [None, 0.3])
def test_regularize_matches_numpy(order, axis, weight):
    rng = np.random.RandomState(2)
    x = rng.randn(3, 4, 5, 6)  # two steps-worth of a (5, 6) signal per batch item
    value = Regularize(order=order, axis=axis, weight=weight)(tf.constant(x)).numpy()
    assert np.isclose(value, np_regularize(x, order, axis, weight), rtol=1e-10)


@pytest.mark.parametrize("order", [1, 2, np.inf])
def test_regularize_vector_signals(order):
    rng = np.random.RandomState(3)
    x = rng.randn(2, 7, 4).astype(np.float32)
    for axis in [None, 0, -1]:  # all the same for a 1-D signal
        value = Regularize(order=order, axis=axis)(x).numpy()
        assert np.isclose(value, np.mean(np.linalg.norm(x, ord=order, axis=2)), rtol=1e-5)


def test_regularize_euclidean_and_scalar_signal():
    x = np.random.RandomState(4).randn(2, 3, 2, 2)
    assert np.isclose(Regularize(order="euclidean")(x).numpy(), Regularize(order=2)(x).numpy())
    s = np.array([[-1.0, 2.0, -3.0]])  # (batch, n_steps) with a scalar signal
    assert np.isclose(Regularize()(s).numpy(), 2.0)


def test_regularize_dtype():
    x = np.ones((1, 2, 3), np.float32)
    assert Regularize(weight=2)(x).dtype == tf.float32
    assert Regularize(weight=2)(x.astype(np.float64)).dtype == tf.float64


# -- Regularize: gradients ------------------------------------------------------------------

def test_regularize_l2_gradient():
    rng = np.random.RandomState(5)
    x = rng.randn(2, 3, 4)
    w = 0.7
    _, grad = value_and_grad(Regularize(order=2, weight=w), x)
    norms = np.linalg.norm(x, axis=2, keepdims=True)
    assert np.allclose(grad, w * x / norms / 6)  # d||x||/dx = x/||x||, mean over 2*3 norms


def test_regularize_l1_gradient_along_axis():
    rng = np.random.RandomState(6)
    x = rng.randn(2, 3, 4, 5)
    _, grad = value_and_grad(Regularize(order=1, axis=0), x)
    assert np.allclose(grad, np.sign(x) / (2 * 3 * 5))  # 30 norms along signal axis 0


def test_regularize_p_gradient():
    rng = np.random.RandomState(7)
    x = rng.randn(1, 2, 5)
    p = 3
    _, grad = value_and_grad(Regularize(order=p), x)
    norms = np.sum(np.abs(x) ** p, axis=2, keepdims=True) ** (1 / p)
    expected = np.sign(x) * np.abs(x) ** (p - 1) / norms ** (p - 1) / 2
    assert np.allclose(grad, expected)


@pytest.mark.parametrize("order", [1, 2, 3, np.inf])
def test_regularize_zero_signal_gradient(order):
    x = np.zeros((2, 3, 4))
    x[0, 0] = [3, 0, 4, 0]
    value, grad = value_and_grad(Regularize(order=order), x)
    assert np.isclose(value, np.linalg.norm([3, 0, 4, 0], ord=order) / 6)
    assert np.all(np.isfinite(grad))
    assert np.all(grad[1:] == 0) and np.all(grad[0, 1:] == 0)


# -- Regularize: validation -----------------------------------------------------------------

@pytest.mark.parametrize("kwargs, attr", [
    (dict(order=0), "order"), (dict(order=-1), "order"), (dict(order="fro"), "order"),
    (dict(order="nuc"), "order"), (dict(order=True), "order"), (dict(order=None), "order"),
    (dict(axis=1.0), "axis"), (dict(axis=(0, 1)), "axis"), (dict(axis=True), "axis"),
    (dict(weight="x"), "weight"), (dict(weight=np.nan), "weight"),
])
def test_regularize_invalid_arguments(kwargs, attr):
    with pytest.raises(ValidationError) as e:
        Regularize(**kwargs)
    assert e.value.attr == attr
    assert f"Regularize.{attr}" in str(e.value)


@pytest.mark.parametrize("axis", [2, -3, 5])
def test_regularize_axis_out_of_range(axis):
    x = np.ones((1, 2, 3, 4))  # the signal has two axes
    with pytest.raises(ValidationError) as e:
        Regularize(axis=axis)(x)
    assert e.value.attr == "axis"


def test_regularize_needs_batch_and_time():
    with pytest.raises(ValidationError, match="batch, n_steps"):
        Regularize()(np.ones(3))


def test_regularize_numpy_ints_and_repr():
    r = Regularize(order=np.int64(1), axis=np.int32(0), weight=np.float32(2))
    assert r.axis == 0 and isinstance(r.axis, int)
    assert repr(Regularize(order=1, axis=0)) == "Regularize(order=1, axis=0, weight=None)"
