import nengo_dl_nb  # first: it starts TensorFlow quietly

import nengo
import pytest


def run_both(net, steps, dtype=None, **kwargs):
    """Run `net` for `steps` in nengo.Simulator and in ours (same seed); return both sims.

    `dtype` set to tf.float64 configures the network for double precision first."""
    if dtype is not None:
        with net:
            nengo_dl_nb.configure_settings(dtype=dtype)
    with nengo.Simulator(net, progress_bar=False) as ref:
        ref.run_steps(steps)
    with nengo_dl_nb.Simulator(net, progress_bar=False, **kwargs) as sim:
        sim.run_steps(steps)
    return ref, sim


@pytest.fixture
def both():
    return run_both
