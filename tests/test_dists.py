"""Weight-initialization distributions: sample statistics against analytic values, the fan
conventions, validation, and use inside Nengo networks."""

import math
import pickle

import nengo
import numpy as np
import pytest
from nengo.exceptions import ValidationError
from scipy import stats

from nengo_dl_nb.dists import He, Glorot, TruncatedNormal, VarianceScaling

N = 200_000  # samples for the statistics; standard error of a variance estimate ~ 0.3%


def truncnorm_moments(mean, stddev, limit):
    "Analytic mean and variance of N(mean, stddev) truncated to [mean - limit, mean + limit]."
    a = limit / stddev
    return stats.truncnorm.mean(-a, a, loc=mean, scale=stddev), \
        stats.truncnorm.var(-a, a, loc=mean, scale=stddev)


# -- TruncatedNormal ------------------------------------------------------------------------

@pytest.mark.parametrize("mean, stddev, limit", [(0, 1, None), (2.5, 0.5, None),
                                                 (-1, 3, 1.0), (0, 1, 3.5)])
def test_truncated_normal_statistics(mean, stddev, limit):
    rng = np.random.RandomState(0)
    x = TruncatedNormal(mean, stddev, limit).sample(N, rng=rng)
    bound = 2 * stddev if limit is None else limit
    assert x.shape == (N,)
    assert np.all(np.abs(x - mean) <= bound)
    # the samples reach close to the bound (the density does not vanish there)
    assert np.abs(x - mean).max() > 0.99 * bound
    m, v = truncnorm_moments(mean, stddev, bound)
    assert abs(x.mean() - m) < 5 * math.sqrt(v / N)
    assert abs(x.var() / v - 1) < 0.02
    # shape of the distribution: Kolmogorov-Smirnov against scipy's truncated normal
    a = bound / stddev
    ks = stats.kstest(x[:20000], stats.truncnorm(-a, a, loc=mean, scale=stddev).cdf)
    assert ks.pvalue > 1e-3


def test_truncated_normal_default_variance():
    # a standard normal truncated at 2 stddevs has stddev 0.8796 (TensorFlow's constant)
    x = TruncatedNormal().sample(N, rng=np.random.RandomState(1))
    assert abs(x.std() - 0.87962566103423978) < 0.005


def test_truncated_normal_shapes_and_rng():
    d = TruncatedNormal(stddev=2)
    assert d.sample(7).shape == (7,)
    assert d.sample(7, 3).shape == (7, 3)
    assert d.sample(7, 3, rng=None).shape == (7, 3)
    a = d.sample(50, 4, rng=np.random.RandomState(3))
    b = d.sample(50, 4, rng=np.random.RandomState(3))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, d.sample(50, 4, rng=np.random.RandomState(4)))


def test_truncated_normal_tight_limit_terminates():
    # only ~4% of draws are accepted at limit 0.05 stddev; resampling still finishes
    x = TruncatedNormal(stddev=1, limit=0.05).sample(1000, rng=np.random.RandomState(0))
    assert np.all(np.abs(x) <= 0.05)


@pytest.mark.parametrize("kwargs, attr", [(dict(stddev=-1), "stddev"), (dict(stddev=0), "stddev"),
                                          (dict(limit=-1), "limit"), (dict(limit=0), "limit"),
                                          (dict(mean="a"), "mean")])
def test_truncated_normal_validation(kwargs, attr):
    with pytest.raises(ValidationError) as e:
        TruncatedNormal(**kwargs)
    assert e.value.attr == attr


def test_truncated_normal_equality_repr_pickle():
    assert TruncatedNormal(1, 2, 3) == TruncatedNormal(mean=1, stddev=2, limit=3)
    assert hash(TruncatedNormal(1, 2)) == hash(TruncatedNormal(1, 2))
    assert TruncatedNormal(1, 2) != TruncatedNormal(1, 3)
    assert repr(TruncatedNormal(mean=1, limit=0.5)) == "TruncatedNormal(mean=1, limit=0.5)"
    d = TruncatedNormal(1, 2, 3)
    assert pickle.loads(pickle.dumps(d)) == d


# -- VarianceScaling ------------------------------------------------------------------------

FANS = {"fan_in": lambda n, d: d, "fan_out": lambda n, d: n, "fan_avg": lambda n, d: (n + d) / 2}


@pytest.mark.parametrize("mode", ["fan_in", "fan_out", "fan_avg"])
@pytest.mark.parametrize("distribution", ["uniform", "normal"])
@pytest.mark.parametrize("scale", [1, 2.5])
def test_variance_scaling_statistics(mode, distribution, scale):
    n, d = 400, 250  # Nengo's weight layout (size_out, size_in): fan_in = d, fan_out = n
    rng = np.random.RandomState(0)
    dist = VarianceScaling(scale=scale, mode=mode, distribution=distribution)
    x = np.concatenate([dist.sample(n, d, rng=rng).ravel() for _ in range(2)])
    variance = scale / FANS[mode](n, d)
    assert abs(x.mean()) < 5 * math.sqrt(variance / x.size)
    assert abs(x.var() / variance - 1) < 0.02
    if distribution == "uniform":
        limit = math.sqrt(3 * variance)
        assert np.all(np.abs(x) <= limit) and np.abs(x).max() > 0.999 * limit
        ks = stats.kstest(x[:20000], stats.uniform(-limit, 2 * limit).cdf)
    else:
        stddev = math.sqrt(variance) / 0.87962566103423978
        assert np.all(np.abs(x) <= 2 * stddev) and np.abs(x).max() > 0.99 * 2 * stddev
        ks = stats.kstest(x[:20000], stats.truncnorm(-2, 2, scale=stddev).cdf)
    assert ks.pvalue > 1e-3


@pytest.mark.parametrize("mode", ["fan_in", "fan_out", "fan_avg"])
def test_variance_scaling_1d(mode):
    # with d=None, fan_in = fan_out = n
    n = 100_000
    x = VarianceScaling(scale=3, mode=mode).sample(n, rng=np.random.RandomState(2))
    assert x.shape == (n,)
    assert VarianceScaling(scale=3, mode=mode).variance(n) == 3 / n
    assert abs(x.var() / (3 / n) - 1) < 0.02


def test_variance_scaling_small_fan():
    # fans below 1 are treated as 1 (as TensorFlow does)
    assert VarianceScaling(mode="fan_in").variance(5, 0) == 1.0
    assert VarianceScaling(mode="fan_out").variance(0, 5) == 1.0
    assert VarianceScaling().sample(0, 5).shape == (0, 5)


def test_variance_scaling_matches_tensorflow_fans():
    # TensorFlow kernels are (in, out); ours are Nengo's (out, in): same variance when transposed
    keras = pytest.importorskip("keras")
    for mode in ["fan_in", "fan_out", "fan_avg"]:
        tf_init = keras.initializers.VarianceScaling(scale=2.0, mode=mode, distribution="uniform",
                                                     seed=0)
        w_tf = np.asarray(tf_init((300, 120)))  # 300 inputs, 120 outputs
        ours = VarianceScaling(scale=2.0, mode=mode).variance(120, 300)
        limit = math.sqrt(3 * ours)
        assert np.abs(w_tf).max() <= limit and np.abs(w_tf).max() > 0.99 * limit


@pytest.mark.parametrize("kwargs, attr", [(dict(mode="fan_sum"), "mode"),
                                          (dict(mode=3), "mode"),
                                          (dict(distribution="truncated"), "distribution"),
                                          (dict(scale=0), "scale"), (dict(scale=-2), "scale")])
def test_variance_scaling_validation(kwargs, attr):
    with pytest.raises(ValidationError) as e:
        VarianceScaling(**kwargs)
    assert e.value.attr == attr


def test_variance_scaling_is_frozen():
    d = VarianceScaling()
    with pytest.raises(ValidationError):
        d.scale = 2
    assert VarianceScaling(mode="FAN_IN", distribution="Normal") == \
        VarianceScaling(mode="fan_in", distribution="normal")


# -- Glorot and He --------------------------------------------------------------------------

@pytest.mark.parametrize("distribution", ["uniform", "normal"])
@pytest.mark.parametrize("scale", [1, math.sqrt(2)])
def test_glorot_statistics(distribution, scale):
    n, d = 300, 500
    x = Glorot(scale=scale, distribution=distribution).sample(n, d, rng=np.random.RandomState(5))
    variance = scale**2 * 2 / (n + d)  # scale is a gain on the standard deviation
    assert abs(x.var() / variance - 1) < 0.03


@pytest.mark.parametrize("distribution", ["uniform", "normal"])
@pytest.mark.parametrize("scale", [1, math.sqrt(2)])
def test_he_statistics(distribution, scale):
    n, d = 300, 500
    x = He(scale=scale, distribution=distribution).sample(n, d, rng=np.random.RandomState(6))
    variance = scale**2 / d
    assert abs(x.var() / variance - 1) < 0.03


def test_glorot_he_defaults_and_repr():
    assert Glorot().distribution == "uniform" and Glorot().mode == "fan_avg"
    assert He().distribution == "normal" and He().mode == "fan_in"
    assert np.isclose(He(scale=math.sqrt(2)).variance(10, 50), 2 / 50)
    assert repr(Glorot(scale=2)) == "Glorot(scale=2)"
    assert repr(He(distribution="uniform")) == "He(distribution='uniform')"
    assert Glorot(scale=2).scale == 2  # stored as given, squared only for the variance
    assert Glorot() != VarianceScaling()
    assert pickle.loads(pickle.dumps(He(scale=3))) == He(scale=3)


@pytest.mark.parametrize("cls", [Glorot, He])
def test_glorot_he_validation(cls):
    with pytest.raises(ValidationError) as e:
        cls(distribution="laplace")
    assert e.value.attr == "distribution"
    with pytest.raises(ValidationError) as e:
        cls(scale=-1)
    assert e.value.attr == "scale"


# -- in Nengo networks ----------------------------------------------------------------------

@pytest.mark.parametrize("dist, fan", [(Glorot(), lambda o, i: (o + i) / 2),
                                       (He(scale=math.sqrt(2)), lambda o, i: i / 2)])
def test_neuron_connection_weights(dist, fan):
    n_in, n_out = 300, 200
    with nengo.Network(seed=1) as net:
        a = nengo.Ensemble(n_in, 1)
        b = nengo.Ensemble(n_out, 1)
        conn = nengo.Connection(a.neurons, b.neurons, transform=dist)
    with nengo.Simulator(net, progress_bar=False) as sim:
        weights = sim.data[conn].weights
    assert weights.shape == (n_out, n_in)
    assert abs(weights.var() / (1 / fan(n_out, n_in)) - 1) < 0.05


def test_ensemble_encoders():
    with nengo.Network(seed=2) as net:
        ens = nengo.Ensemble(50, 3, encoders=TruncatedNormal(mean=1, stddev=0.5, limit=0.1))
    with nengo.Simulator(net, progress_bar=False) as sim:
        enc = sim.data[ens].encoders
    assert enc.shape == (50, 3)
    # all raw samples lie in [0.9, 1.1], so the normalized encoders point near (1, 1, 1)/sqrt(3)
    assert np.all(enc @ (np.ones(3) / math.sqrt(3)) > 0.99)


def test_transform_accepts_distribution():
    # a Distribution is accepted by Nengo's transform parameter and validated on creation
    with nengo.Network():
        a = nengo.Ensemble(10, 1)
        b = nengo.Ensemble(20, 1)
        conn = nengo.Connection(a.neurons, b.neurons, transform=VarianceScaling(mode="fan_in"))
    assert conn.transform.init == VarianceScaling(mode="fan_in")
    assert conn.transform.shape == (20, 10)


def test_our_simulator_samples_the_same_weights():
    import nengo_dl_nb
    with nengo.Network(seed=3) as net:
        a = nengo.Ensemble(30, 1)
        b = nengo.Ensemble(20, 1)
        conn = nengo.Connection(a.neurons, b.neurons, transform=Glorot(distribution="normal"))
        nengo.Probe(b.neurons)
    with nengo.Simulator(net, progress_bar=False) as ref:
        expected = ref.data[conn].weights
    with nengo_dl_nb.Simulator(net, progress_bar=False) as sim:
        sim.run_steps(2)
        assert np.allclose(sim.data[conn].weights, expected)


# -- Glorot and He: scale is a gain on the standard deviation, every case by hand ------------

# sample(300, 500): fan_in = 500, fan_out = 300, fan_avg = 400. The reference: "for rectified
# linear units this should be sqrt(2), otherwise usually 1" -- He et al.'s rectifier variance
# 2 / fan_in at scale sqrt(2), so the variance is scale**2 / fan.
HAND_VARIANCES = [
    (Glorot, 1, 1 / 400), (Glorot, 2, 4 / 400), (Glorot, math.sqrt(2), 2 / 400),
    (He, 1, 1 / 500), (He, 2, 4 / 500), (He, math.sqrt(2), 2 / 500),
]


@pytest.mark.parametrize("cls, scale, variance", HAND_VARIANCES)
@pytest.mark.parametrize("distribution", ["uniform", "normal"])
def test_glorot_he_variance_by_hand(cls, scale, variance, distribution):
    dist = cls(scale=scale, distribution=distribution)
    assert np.isclose(dist.variance(300, 500), variance)
    rng = np.random.RandomState(7)
    x = np.concatenate([dist.sample(300, 500, rng=rng).ravel() for _ in range(3)])  # 450,000
    assert abs(x.var() / variance - 1) < 0.015
    assert abs(x.mean()) < 5 * math.sqrt(variance / x.size)
    if distribution == "uniform":
        limit = math.sqrt(3 * variance)
        assert np.abs(x).max() <= limit
    else:
        # drawn from N(0, sigma) with sigma = sqrt(variance) / 0.8796..., cut at 2 sigma: the
        # cut leaves exactly the variance asked for (0.8796... = std of N(0, 1) cut at +-2)
        sigma = math.sqrt(variance) / 0.87962566103423978
        assert np.abs(x).max() <= 2 * sigma
        assert np.abs(x).max() > 0.999 * 2 * sigma
        # mass beyond 1 sigma: 2 (Phi(2) - Phi(1)) / (2 Phi(2) - 1) = 0.27181 / 0.95450 = 0.28477
        assert abs(np.mean(np.abs(x) > sigma) - 0.28477) < 0.005


@pytest.mark.parametrize("mode, fan", [("fan_in", 500), ("fan_out", 300), ("fan_avg", 400)])
@pytest.mark.parametrize("scale", [1, 2])
def test_variance_scaling_normal_by_hand(mode, fan, scale):
    dist = VarianceScaling(scale=scale, mode=mode, distribution="normal")
    x = np.concatenate([dist.sample(300, 500, rng=np.random.RandomState(s)).ravel()
                        for s in range(3)])
    variance = scale / fan  # VarianceScaling's scale multiplies the variance (TensorFlow's)
    assert abs(x.var() / variance - 1) < 0.015
    sigma = math.sqrt(variance) / 0.87962566103423978
    assert np.abs(x).max() <= 2 * sigma and np.abs(x).max() > 0.999 * 2 * sigma


def test_glorot_scale_two_differs_from_variance_scaling_scale_two():
    # the same number means a gain on the std for Glorot, a factor on the variance for
    # VarianceScaling: Glorot(2) = VarianceScaling(4, "fan_avg")
    assert np.isclose(Glorot(scale=2).variance(300, 500), VarianceScaling(4).variance(300, 500))
    assert np.isclose(He(scale=2).variance(300, 500),
                      VarianceScaling(4, mode="fan_in").variance(300, 500))
