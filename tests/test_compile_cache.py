"""The persistent XLA compile cache (`nbs/90_package.ipynb`) and the canonical names that
make its key stable (`nbs/14_runner.ipynb`).

Fresh processes (`compile_cache_child.py`) build and run `benchmarks.small(50)` (and a model
with a Python Node) with the cache in a temporary directory. A hit is proven by TensorFlow's
own log line (`Loading cached entry for: <function name>`, at
`TF_CPP_VMODULE=device_executable_persistor=1`) and by no entry being written again; timings
are printed as evidence, never asserted.
"""
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

import nengo_dl_nb

HERE = os.path.dirname(os.path.abspath(__file__))
LOADED = "Loading cached entry for: "
# the children import the package this process imported, wherever it is
PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(nengo_dl_nb.__file__)))
RETRIED = "could not be loaded from the XLA compile cache"


def start_child(tmp_path, name, cache, *seeds, model="small", extra_env=None, cwd=None):
    """Start the child in a fresh process with the compile cache at `cache` (a directory,
    'off', or None: not set); returns the process and where its outputs go."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="0",
               TF_CPP_VMODULE="device_executable_persistor=1",
               PYTHONPATH=os.pathsep.join([PACKAGE_ROOT] + [
                   p for p in [os.environ.get("PYTHONPATH")] if p]))
    env.pop("TF_XLA_FLAGS", None)
    env.pop("XLA_FLAGS", None)  # (this process's import added the kernel order flag)
    env.pop("NENGO_DL_NB_XLA_CACHE", None)
    if cache is not None:
        env["NENGO_DL_NB_XLA_CACHE"] = str(cache)
    env.update(extra_env or {})
    out = tmp_path / f"{name}.npz"
    proc = subprocess.Popen(
        [sys.executable, os.path.join(HERE, "compile_cache_child.py"), str(out), model]
        + [str(s) for s in seeds], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, cwd=cwd)
    return proc, out


def finish_child(name, proc, out):
    """Wait for a child; returns (its JSON report, its outputs, the names of the functions
    TensorFlow loaded from the cache, its standard error)."""
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr[-3000:]
    report = json.loads(stdout.strip().splitlines()[-1])
    loaded = [line.split(LOADED)[1].split("[")[0] for line in stderr.splitlines()
              if LOADED in line]
    with np.load(out) as data:
        outputs = {k: data[k] for k in data.files}
    print(name, json.dumps(report["models"]))
    return report, outputs, loaded, stderr


def child(tmp_path, name, cache, *seeds, **kwargs):
    "Run the child (see `start_child`) and wait for it (see `finish_child`)."
    return finish_child(name, *start_child(tmp_path, name, cache, *seeds, **kwargs))


def traces(directory):
    "The trace cache entries under `directory` (`nbs/14_runner.ipynb`), sorted."
    return sorted(str(p) for p in directory.rglob("*" + nengo_dl_nb.TRACE_SUFFIX))


def entries(directory):
    "{path: (inode, mtime_ns)} of the cache entries under `directory`."
    found = {}
    for folder, _, names in os.walk(directory):
        for n in names:
            if n.endswith(".pb"):
                st = os.stat(os.path.join(folder, n))
                found[os.path.join(folder, n)] = (st.st_ino, st.st_mtime_ns)
    return found


def assert_bitwise_equal(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape
        assert a[k].tobytes() == b[k].tobytes(), k


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    "A first process with an empty cache directory: compiles, and writes the entries."
    tmp = tmp_path_factory.mktemp("cache")
    cache = tmp / "xla"
    report, outputs, loaded, _ = child(tmp, "first", cache, 0)
    return tmp, cache, report, outputs, loaded


def test_second_process_loads_from_cache(first, tmp_path):
    tmp, cache, report, outputs, loaded = first
    assert report["cache"].startswith(str(cache)) and not loaded
    assert report["tf_xla_flags"] is None  # the flag went to TensorFlow only, not to children
    written = entries(cache)
    names = set(report["models"][0]["names"])
    assert len(written) == len(names) == 2  # the step function and the run loop
    assert all(nengo_dl_nb.valid_entry(p) for p in written)

    report2, outputs2, loaded2, stderr = child(tmp_path, "second", cache, 0)
    assert sorted(loaded2) == sorted(names)  # both compiled functions came from the cache ...
    assert entries(cache) == written  # ... and nothing was compiled and written again
    assert_bitwise_equal(outputs2, outputs)
    # the run function was traced once, kept, and called untraced by the second process
    assert not report["models"][0]["run_loaded"] and report2["models"][0]["run_loaded"]
    assert len(traces(cache)) == 1 and nengo_dl_nb.valid_trace_entry(traces(cache)[0])
    # the false alarms TensorFlow prints when it loads an entry are filtered out
    assert "XlaSerializedCacheEntry" not in stderr and "prefer-no-scatter" not in stderr
    m1, m2 = report["models"][0], report2["models"][0]
    print(f"first step: {m1['first_step']:.3f} s compiled, {m2['first_step']:.3f} s loaded; "
          f"first run: {m1['run']:.3f} s, {m2['run']:.3f} s")


def test_cache_off_gives_identical_outputs(first, tmp_path):
    tmp, cache, report, outputs, loaded = first
    home = tmp_path / "home"  # the default place would be under it: nothing may appear
    report_off, outputs_off, loaded_off, _ = child(
        tmp_path, "off", "off", 0, extra_env={"HOME": str(home)})
    assert report_off["cache"] is None and not loaded_off
    assert not report_off["models"][0]["run_loaded"]
    assert not home.exists() or not any(p.name == "nengo_dl_nb_xla" for p in home.rglob("*"))
    assert_bitwise_equal(outputs_off, outputs)


def test_corrupt_entries_are_ignored_and_replaced(first, tmp_path):
    tmp, cache, report, outputs, loaded = first
    copy = tmp_path / "xla"  # a copy of the good cache, then damaged
    for path in entries(cache):
        target = copy / os.path.relpath(path, cache)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(open(path, "rb").read())
    damaged = sorted(entries(copy))
    data = open(damaged[0], "rb").read()
    open(damaged[0], "wb").write(data[: len(data) // 2])  # cut short
    open(damaged[1], "wb").close()  # empty (what a crash before the data reached disk leaves)
    for path in damaged:
        assert not nengo_dl_nb.valid_entry(path)

    report3, outputs3, loaded3, _ = child(tmp_path, "corrupt", copy, 0)
    assert not loaded3  # neither damaged entry was loaded ...
    assert_bitwise_equal(outputs3, outputs)  # ... the run compiled and gave the same outputs
    assert sorted(entries(copy)) == damaged  # and good entries replaced the damaged ones
    assert all(nengo_dl_nb.valid_entry(p) for p in damaged)


def test_identical_model_in_same_process(tmp_path):
    """A second model of the same structure (another seed: other weights) reuses the first
    one's compiled step and run, with its own variables: its outputs are bitwise those of
    a process that built only it, and nothing was loaded from disk for it."""
    report, outputs, loaded, _ = child(tmp_path, "both", tmp_path / "xla", 0, 1)
    a, b = report["models"]
    assert a["names"] == b["names"]
    assert not loaded and len(entries(tmp_path / "xla")) == 2  # compiled once, in memory
    _, alone, _, _ = child(tmp_path, "alone", "off", 1)
    assert_bitwise_equal({"seed1": outputs["seed1"]}, alone)
    assert not np.array_equal(outputs["seed0"], outputs["seed1"])  # other weights, other outputs


def test_users_own_flag_is_respected(tmp_path):
    own = tmp_path / "own"
    report, _, loaded, _ = child(
        tmp_path, "own", tmp_path / "ours", 0,
        extra_env={"TF_XLA_FLAGS": f"--tf_xla_persistent_cache_directory={own}"})
    assert report["cache"] == str(own) and report["tf_xla_flags"].endswith(str(own))
    assert len(entries(own)) == 2 and not (tmp_path / "ours").exists()


def test_names_do_not_depend_on_earlier_traces():
    """The canonical name of a traced function is the same however many functions were
    traced before it (TensorFlow's own name carries a process-wide counter)."""
    import tensorflow as tf
    from nengo_dl_nb.runner import canonical_function

    def trace():
        def loop(x):
            return tf.while_loop(lambda i, y: i < 3, lambda i, y: (i + 1, y * 2.0), (0, x))[1]
        return tf.function(loop, autograph=False).get_concrete_function(
            tf.TensorSpec((2,), tf.float32))
    a = trace()
    for _ in range(3):  # other traces move the counter on
        tf.function(lambda x: x + 1.0).get_concrete_function(tf.TensorSpec((), tf.float32))
    b = trace()
    assert a._inference_function.name != b._inference_function.name
    ca, cb = canonical_function(a), canonical_function(b)
    assert ca.name == cb.name and [c.name for c in ca.children] == [c.name for c in cb.children]


def test_prune_bounds_size_oldest_first(tmp_path):
    def entry(n):
        payload = bytes(n)
        return b"".join(bytes([f << 3 | 2]) + bytes([len(v)]) + v
                        for f, v in ((1, b"key"), (2, payload), (3, b"x")))
    now = time.time()
    for i in range(5):  # 5 entries of 100 bytes, entry 4 the newest
        path = tmp_path / "sub" / f"e{i}.pb"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(entry(90))
        os.utime(path, (now - 100 + i, now - 100 + i))
    (tmp_path / "sub" / "half.pb").write_bytes(entry(50)[:30])  # broken: removed
    live = tmp_path / "sub" / "e.pb.123.tmp"  # a write in progress: kept
    live.write_bytes(b"")
    dead = tmp_path / "sub" / "e.pb.456.tmp"  # a writer that died long ago: removed
    dead.write_bytes(b"")
    os.utime(dead, (now - 7200, now - 7200))
    assert len(entry(90)) == 100
    assert nengo_dl_nb.prune_xla_cache(tmp_path, max_bytes=250) == 200
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == [
        "e.pb.123.tmp", "e3.pb", "e4.pb"]


def test_unwritable_directory_turns_the_cache_off(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.warns(RuntimeWarning, match="compiling without it"):
        directory, flag = nengo_dl_nb.prepare_xla_cache(
            {"NENGO_DL_NB_XLA_CACHE": str(blocker / "xla")})
    assert directory is None and flag is None


def test_other_compiler_flags_get_other_entries(tmp_path):
    """Functions compiled under other XLA flags are kept apart: the cache's own key does
    not name the flags, and an entry compiled with (say) another code generator ran 2.5x
    slower when loaded by a run without those flags."""
    env = {"NENGO_DL_NB_XLA_CACHE": str(tmp_path)}
    plain, _ = nengo_dl_nb.prepare_xla_cache(env)
    with_xla, _ = nengo_dl_nb.prepare_xla_cache({**env, "XLA_FLAGS": "--xla_cpu_enable_fast_math=true"})
    with_tf, _ = nengo_dl_nb.prepare_xla_cache({**env, "TF_XLA_FLAGS": "--tf_xla_min_cluster_size=3"})
    assert len({plain, with_xla, with_tf}) == 3
    assert all(os.path.dirname(d) == str(tmp_path) for d in (plain, with_xla, with_tf))
    assert nengo_dl_nb.prepare_xla_cache({**env, "XLA_FLAGS": " "})[0] == plain  # blank: none


@pytest.mark.parametrize("model", ["nodes", "integrator"])
def test_compiler_flags_keep_outputs(tmp_path, model):
    """Importing the package orders XLA's CPU kernels for memory, not concurrency, has
    loop copies placed by region analysis, and asks for 512-bit vectors where the
    processor has them (`startup.compiler_flags`), unless `XLA_FLAGS` names the flag. The
    same kernels in XLA's default order and with its default copies give the same
    outputs, bit for bit (single steps and a run); 256-bit vectors the same to rounding."""
    startup = nengo_dl_nb.startup
    order, width = startup.KERNEL_ORDER_FLAG, startup.VECTOR_WIDTH_FLAG
    copies = startup.COPY_ANALYSIS_FLAG
    wide = [f"{width}=512"] if startup.has_avx512() else []
    ours = start_child(tmp_path, "ours", "off", 1, 2, model=model)
    default = start_child(tmp_path, "default", "off", 1, 2, model=model,
                          extra_env={"XLA_FLAGS": f"{order}=true {copies}=false"})
    narrow = start_child(tmp_path, "narrow", "off", 1, 2, model=model,
                         extra_env={"XLA_FLAGS": f"{width}=256"})
    report, outputs, _, _ = finish_child("ours", *ours)
    report_default, outputs_default, _, _ = finish_child("default", *default)
    report_narrow, outputs_narrow, _, _ = finish_child("narrow", *narrow)
    assert report["xla_flags"].split() == [f"{order}=false", f"{copies}=true"] + wide
    # the user's choices stand
    assert report_default["xla_flags"].split() == [f"{order}=true", f"{copies}=false"] + wide
    assert report_narrow["xla_flags"].split() == [f"{width}=256", f"{order}=false",
                                                  f"{copies}=true"]
    assert sorted(outputs) == sorted(outputs_default) == sorted(outputs_narrow) == ["seed1", "seed2"]
    for key in outputs:
        assert np.array_equal(outputs[key], outputs_default[key]), key
        np.testing.assert_allclose(outputs[key], outputs_narrow[key], rtol=1e-5, atol=1e-6)


def test_default_directory_is_beside_nengos_decoder_cache():
    import nengo
    root = nengo_dl_nb.xla_cache_root({})
    decoders = os.path.expanduser(nengo.rc.get("decoder_cache", "path"))
    assert os.path.dirname(root) == os.path.dirname(os.path.abspath(decoders))
    assert os.path.basename(root) == "nengo_dl_nb_xla"
    for off in ("off", "OFF", "0", "false", "none", ""):
        assert nengo_dl_nb.xla_cache_root({"NENGO_DL_NB_XLA_CACHE": off}) is None



def copy_cache(cache, target):
    "A copy of the cache directory `cache` at `target`; returns its entries' paths, sorted."
    for path in entries(cache):
        copied = target / os.path.relpath(path, cache)
        copied.parent.mkdir(parents=True, exist_ok=True)
        copied.write_bytes(open(path, "rb").read())
    return sorted(entries(target))


def test_damage_inside_an_entry_is_ignored_and_replaced(first, tmp_path):
    """Entries whose framing is whole but whose compiled code is damaged pass the check at
    import; TensorFlow fails the call that loads them, and the runner compiles under
    another name, removes them, and the next process writes good ones."""
    tmp, cache, report, outputs, loaded = first
    damaged = copy_cache(cache, tmp_path / "xla")
    for path in damaged:
        data = bytearray(open(path, "rb").read())
        data[-2000:-1500] = bytes(b ^ 0xFF for b in data[-2000:-1500])  # inside the executable
        open(path, "wb").write(bytes(data))
        assert nengo_dl_nb.valid_entry(path)  # nothing the framing shows

    _, outputs1, _, stderr1 = child(tmp_path, "damaged", tmp_path / "xla", 0)
    assert stderr1.count(RETRIED) == 2  # both functions, each said once
    assert_bitwise_equal(outputs1, outputs)
    assert not set(damaged) & set(entries(tmp_path / "xla"))  # the damaged entries are gone

    _, outputs2, loaded2, stderr2 = child(tmp_path, "after", tmp_path / "xla", 0)
    assert RETRIED not in stderr2 and not loaded2  # compiled under the usual names, saved
    _, outputs3, loaded3, stderr3 = child(tmp_path, "replaced", tmp_path / "xla", 0)
    assert sorted(loaded3) == sorted(report["models"][0]["names"]) and RETRIED not in stderr3
    assert_bitwise_equal(outputs2, outputs)
    assert_bitwise_equal(outputs3, outputs)


def test_two_processes_fill_one_cache_at_once(first, tmp_path):
    """Two processes started together on an empty cache both compile and write the same
    two entries (each to a temporary file renamed into place): both run, give the
    outputs of a process alone, and leave two whole entries and no temporary file."""
    tmp, cache, report, outputs, loaded = first
    shared = tmp_path / "xla"
    started = [start_child(tmp_path, f"together{i}", shared, 0) for i in range(2)]
    for i, (proc, out) in enumerate(started):
        _, outputs_i, _, stderr = finish_child(f"together{i}", proc, out)
        assert_bitwise_equal(outputs_i, outputs)
        assert RETRIED not in stderr
    files = [p for p in shared.rglob("*") if p.is_file()]
    assert len(files) == 3 and sum(p.suffix == ".pb" and nengo_dl_nb.valid_entry(p)
                                   for p in files) == 2
    assert [str(p) for p in files if p.suffix == ".trace"] == traces(shared)
    assert nengo_dl_nb.valid_trace_entry(traces(shared)[0])  # one whole trace entry too
    assert sorted(os.path.basename(p) for p in entries(shared)) == sorted(
        os.path.basename(p) for p in entries(cache))  # the very entries a process alone writes


def test_damaged_trace_entry_is_ignored_and_replaced(first, tmp_path):
    """A trace cache entry with one byte changed (or cut short) fails its digest: the next
    process traces the run function as without the cache, gives the same outputs, and
    writes a whole entry in its place; the process after that calls it untraced."""
    tmp, cache, report, outputs, loaded = first
    copy_cache(cache, tmp_path / "xla")
    [trace] = traces(cache)
    copied = tmp_path / "xla" / os.path.relpath(trace, cache)
    data = bytearray(open(trace, "rb").read())
    for damaged in (bytes(data[:-1]) + bytes([data[-1] ^ 1]), bytes(data[: len(data) // 2])):
        copied.parent.mkdir(parents=True, exist_ok=True)
        copied.write_bytes(damaged)
        assert not nengo_dl_nb.valid_trace_entry(copied)
        report1, outputs1, _, _ = child(tmp_path, "damaged_trace", tmp_path / "xla", 0)
        assert not report1["models"][0]["run_loaded"]  # traced
        assert_bitwise_equal(outputs1, outputs)
        assert nengo_dl_nb.valid_trace_entry(copied)  # replaced by a whole one
    report2, outputs2, _, _ = child(tmp_path, "after_trace", tmp_path / "xla", 0)
    assert report2["models"][0]["run_loaded"]
    assert_bitwise_equal(outputs2, outputs)


def test_other_seed_shares_the_trace(tmp_path):
    """Models that differ only in their seed (other weights: other initial values of the
    same variables) share one trace entry: a process that builds seed 1 after another
    built seed 0 calls the stored run function untraced, and its outputs are bitwise
    those of a process without any cache."""
    cache = tmp_path / "xla"
    report0, _, _, _ = child(tmp_path, "seed0", cache, 0, model="integrator")
    report1, outputs1, _, _ = child(tmp_path, "seed1", cache, 1, model="integrator")
    assert not report0["models"][0]["run_loaded"] and report1["models"][0]["run_loaded"]
    assert len(traces(cache)) == 1
    _, alone, _, _ = child(tmp_path, "seed1_off", "off", 1, model="integrator")
    assert_bitwise_equal(outputs1, alone)


def test_python_node_model_loads_its_compiled_parts(tmp_path):
    """A model with a Python Node runs as compiled parts called from Python: a second process
    loads every part from the cache, prints none of TensorFlow's false alarms about it,
    and gives bitwise the outputs of a process without the cache."""
    cache = tmp_path / "xla"
    report, outputs, loaded, _ = child(tmp_path, "nodes_first", cache, 0, model="nodes")
    names = report["models"][0]["names"]
    assert len(names) == 2 and not loaded and len(entries(cache)) == 2
    _, outputs2, loaded2, stderr = child(tmp_path, "nodes_second", cache, 0, model="nodes")
    assert sorted(loaded2) == sorted(names)
    assert "XlaSerializedCacheEntry" not in stderr and "prefer-no-scatter" not in stderr
    _, outputs_off, _, _ = child(tmp_path, "nodes_off", "off", 0, model="nodes")
    assert_bitwise_equal(outputs2, outputs_off)
    assert_bitwise_equal(outputs, outputs_off)


def test_python_node_parts_come_from_the_trace_cache(tmp_path):
    """The compiled parts of a step with a Python Node are kept in the trace cache under keys
    that leave the Node's function out: a second process with the same model, and one with
    another function in the Node, call them untraced; each gives bitwise the outputs of a
    process without the cache, and the other function's outputs are its own."""
    cache = tmp_path / "xla"
    report, outputs, _, _ = child(tmp_path, "parts_first", cache, 0, model="nodes")
    assert not report["models"][0]["parts_loaded"] and len(traces(cache)) == 2
    report2, outputs2, _, _ = child(tmp_path, "parts_second", cache, 0, model="nodes")
    report3, outputs3, _, _ = child(tmp_path, "parts_cubes", cache, 0, model="cubes")
    assert report2["models"][0]["parts_loaded"] and report3["models"][0]["parts_loaded"]
    assert len(traces(cache)) == 2  # nothing traced and written again
    _, off, _, _ = child(tmp_path, "parts_off", "off", 0, model="nodes")
    _, cubes_off, _, _ = child(tmp_path, "parts_cubes_off", "off", 0, model="cubes")
    assert_bitwise_equal(outputs, off)
    assert_bitwise_equal(outputs2, off)
    assert_bitwise_equal(outputs3, cubes_off)
    assert not np.array_equal(outputs3["seed0"], outputs2["seed0"])


def test_nengorc_setting_moves_the_cache(tmp_path):
    """Without the environment variable, `xla_cache` in the `[nengo_dl_nb]` section of a
    `nengorc` (here the one nengo reads from the working directory) places the cache."""
    place = tmp_path / "from_rc"
    (tmp_path / "nengorc").write_text(f"[nengo_dl_nb]\nxla_cache = {place}\n")
    report, _, _, _ = child(tmp_path, "rc", None, 0, cwd=tmp_path)
    assert report["cache"].startswith(str(place))
    assert len(entries(place)) == 2


def test_nengorc_setting_turns_the_cache_off(tmp_path):
    import nengo
    nengo.rc.add_section("nengo_dl_nb")
    try:
        nengo.rc.set("nengo_dl_nb", "xla_cache", "off")
        assert nengo_dl_nb.xla_cache_root({}) is None
        assert nengo_dl_nb.prepare_xla_cache({}) == (None, None)
        nengo.rc.set("nengo_dl_nb", "xla_cache_size", "3 kB")  # nengo counts kB in 1024s
        assert nengo_dl_nb.xla_cache_bytes({}) == 3 * 1024
        assert nengo_dl_nb.xla_cache_bytes({"NENGO_DL_NB_XLA_CACHE_MB": "2"}) == 2 * 2**20
    finally:
        nengo.rc.remove_section("nengo_dl_nb")


def test_this_suite_keeps_out_of_the_users_cache():
    """tests/conftest.py points the compile cache of the test processes at a directory of
    their own (unless the environment chose one already)."""
    import nengo
    decoders = os.path.expanduser(nengo.rc.get("decoder_cache", "path"))
    users = os.path.join(os.path.dirname(os.path.abspath(decoders)), "nengo_dl_nb_xla")
    assert nengo_dl_nb.XLA_CACHE_DIR is None or not nengo_dl_nb.XLA_CACHE_DIR.startswith(users)
