"""Planner displays: `plot_signal_blocks` draws one row per op group with access colours,
`compare_planners` tables every planner x sorter with the right group counts."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import nengo
import numpy as np
import pytest

from nengo_dl_nb.graph_optimizer import (greedy_planner, noop_order_signals, noop_planner,
                                         order_signals, read_types, transitive_planner,
                                         tree_planner)
from nengo_dl_nb.widgets import (ACCESS_KINDS, PlannerComparison, compare_planners,
                                 model_operators, plot_signal_blocks, signal_access)


def chain_net(n_ens=3):
    with nengo.Network(seed=0) as net:
        stim = nengo.Node(np.sin)
        ens = [nengo.Ensemble(10, 1) for _ in range(n_ens)]
        nengo.Connection(stim, ens[0])
        for pre, post in zip(ens[:-1], ens[1:]):
            nengo.Connection(pre, post)
        nengo.Probe(ens[-1], synapse=0.01)
    return net


@pytest.fixture(scope="module")
def built():
    return model_operators(chain_net())


@pytest.fixture(scope="module")
def ops(built):
    return built[0]


@pytest.fixture(scope="module")
def kinds(built):
    return built[1]


def test_model_operators_drop_probes_and_give_the_layouts_keys(ops, kinds):
    assert not any(type(op).__name__ == "SimProbe" for op in ops)
    written = {s.base for op in ops for s in op.sets + op.incs + op.updates}
    read_only = {s.base for op in ops for s in op.reads} - written
    for op in ops:
        for sig in op.all_signals:
            assert not hasattr(sig.base, "minibatched")  # nothing set on nengo's signals
    assert all(kinds[b].minibatched for b in written)
    # parameters (encoders, decoders) are not state; the input node's output is
    assert any(kinds[b].trainable and not kinds[b].minibatched for b in read_only)
    assert not any(type(op).__name__ == "SimPyFunc" and op.x is None for op in ops)


@pytest.mark.parametrize("planner", [greedy_planner, transitive_planner, noop_planner])
def test_plot_has_one_row_per_op_group(ops, kinds, planner):
    sigs, plan = order_signals(planner(ops, kinds), kinds)
    fig, ax = plt.subplots()
    assert plot_signal_blocks(plan, sigs, ax=ax, kinds=kinds) is ax
    image = ax.images[0].get_array()
    assert image.shape == (len(plan), len(sigs))
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert len(labels) == len(plan)
    assert labels[0] == f"{type(plan[0][0]).__name__} x{len(plan[0])}"
    counts = read_types(plan, sigs, kinds)
    assert f"{counts['slice']} slice / {counts['gather']} gather" in ax.get_title()
    plt.close(fig)


def test_plot_default_signals_and_new_figure(ops):
    plan = greedy_planner(ops)
    ax = plot_signal_blocks(plan)
    sigs, _ = noop_order_signals(plan)
    assert ax.images[0].get_array().shape == (len(plan), len(sigs))
    assert [t.get_text() for t in ax.get_legend().get_texts()] == list(ACCESS_KINDS)


def test_signal_access_colours_each_access(ops):
    plan = noop_planner(ops)
    sigs, _ = noop_order_signals(plan)
    access = signal_access(plan, sigs)
    column = {s: i for i, s in enumerate(sigs)}
    for row, (op,) in enumerate(plan):
        for code, kind_sigs in enumerate((op.reads, op.sets, op.incs, op.updates), start=1):
            for sig in kind_sigs:
                assert access[row, column[sig.base]] >= code  # writes win over reads
        touched = {column[s.base] for s in op.all_signals}
        assert set(np.flatnonzero(access[row])) == touched


def test_compare_planners_rows_and_group_counts(ops, kinds):
    net = chain_net()
    planners = (greedy_planner, tree_planner, transitive_planner, noop_planner)
    sorters = (order_signals, noop_order_signals)
    table = compare_planners(net, planners, sorters)
    assert isinstance(table, PlannerComparison)
    assert [(r["planner"], r["sorter"]) for r in table] == [
        (p.__name__, s.__name__) for p in planners for s in sorters]
    assert table.n_operators == len(ops)
    for row in table:
        planner = next(p for p in planners if p.__name__ == row["planner"])
        assert row["op_groups"] == len(planner(ops, kinds))
        assert row["slice"] + row["gather"] > 0
        assert row["plan_ms"] >= 0 and row["sort_ms"] >= 0
    html = table._repr_html_()
    assert html.count("<tr>") == len(table) + 1
    assert "transitive_planner" in html and "noop_order_signals" in html


def test_compare_planners_defaults_and_operator_list(ops, kinds):
    table = compare_planners((ops, kinds), planners=[greedy_planner])
    assert [r["sorter"] for r in table] == ["order_signals", "noop_order_signals"]
    assert all(r["op_groups"] == len(greedy_planner(ops, kinds)) for r in table)
    assert len(compare_planners(chain_net(2))) == 8
