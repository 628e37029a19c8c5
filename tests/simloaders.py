"""Simulator variants for running the Nengo suite in other configurations.

    PYTHONPATH=tests python -m pytest --pyargs nengo -o nengo_simloader=simloaders.float64
    PYTHONPATH=tests python -m pytest --pyargs nengo -o nengo_simloader=simloaders.unroll5
"""
import tensorflow as tf

import nengo_dl_nb


class Float64Simulator(nengo_dl_nb.Simulator):
    "Our Simulator with the network configured for float64."

    def __init__(self, network, *args, **kwargs):
        if network is not None:
            with network:
                nengo_dl_nb.configure_settings(dtype=tf.float64)
        super().__init__(network, *args, **kwargs)


class Unroll5Simulator(nengo_dl_nb.Simulator):
    "Our Simulator with five timesteps per loop iteration."

    def __init__(self, network, *args, **kwargs):
        kwargs.setdefault("unroll_simulation", 5)
        super().__init__(network, *args, **kwargs)


def float64(request):
    return Float64Simulator


def unroll5(request):
    return Unroll5Simulator
