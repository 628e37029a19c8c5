import os
import tempfile

# The tests build hundreds of models: their compiled functions go to a compile cache of
# their own (kept between runs, under the system's temporary directory, and shared by the
# test processes), never to the user's, unless the environment names one already. This must
# come before the package's import, which starts TensorFlow with the cache's directory.
os.environ.setdefault("NENGO_DL_NB_XLA_CACHE", os.path.join(
    tempfile.gettempdir(), f"nengo_dl_nb_tests_xla-{getattr(os, 'getuid', lambda: 0)()}"))

import nengo_dl_nb  # noqa: E402  (it starts TensorFlow quietly)

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
