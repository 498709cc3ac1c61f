"""fastconv.torch.enabled() / enable(): torch.nn.functional.conv2d and max_pool2d calls (and the
modules and libraries that make them, Keras 3 on its torch backend) routed through fastconv by a
torch function mode, against native torch; what fastconv cannot serve stays on torch."""
import importlib.util
import os
import subprocess
import sys
import textwrap
import threading

import pytest

torch = pytest.importorskip("torch")
import fastconv  # noqa: E402
import fastconv.torch as fct  # noqa: E402

F = torch.nn.functional


@pytest.fixture
def counted(monkeypatch):
    """{function: calls} of fastconv's public conv2d / max_pool2d while the test runs."""
    counts = {"conv2d": 0, "max_pool2d": 0}
    for name in counts:
        inner = getattr(fastconv, name)

        def wrapper(*args, _inner=inner, _name=name, **kwargs):
            counts[_name] += 1
            return _inner(*args, **kwargs)
        monkeypatch.setattr(fastconv, name, wrapper)
    return counts


def _net(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 6, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                               torch.nn.Conv2d(6, 4, 3, stride=2, padding=1, groups=2),
                               torch.nn.Flatten(), torch.nn.Linear(4 * 3 * 3, 5)).double()


def test_functional_calls_and_modules_run_on_fastconv_with_native_results(counted):
    x = torch.randn(2, 3, 11, 11, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    native, routed = _net(), _net()
    results = []
    for model, ctx in ((native, None), (routed, fct.enabled())):
        xi = x.clone().requires_grad_(True)
        with ctx if ctx is not None else torch.enable_grad():
            out = model(xi)
            y, idx = F.max_pool2d(xi, 3, 2, 1, return_indices=True)
            z = F.conv2d(xi, model[0].weight, None, padding="same", dilation=2)
            (out.square().sum() + y.sum() + z.sum()).backward()
        results.append([out, y, idx, z, xi.grad] + [p.grad for p in model.parameters()])
    assert counted["conv2d"] == 3 and counted["max_pool2d"] == 2  # 2 modules + 1 call; 1 module + 1 call
    for a, b in zip(*results):
        if a.dtype == torch.int64:
            assert torch.equal(a, b)
        else:
            torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-12)


def test_what_fastconv_cannot_serve_stays_on_torch(counted):
    x = torch.randn(1, 2, 6, 6)
    w = torch.randn(3, 2, 3, 3)
    cases = [(x.bfloat16(), w.bfloat16()), (x[0], w)]  # another dtype; an unbatched (C, H, W) input
    expected = [F.conv2d(xi, wi) for xi, wi in cases]
    with fct.enabled():
        for (xi, wi), e in zip(cases, expected):
            assert torch.equal(F.conv2d(xi, wi), e)  # torch's own result, bit for bit
        with pytest.raises(RuntimeError):  # mixed dtypes: torch's own error, not fastconv's
            F.conv2d(x, w.double())
        assert torch.equal(F.max_pool2d(x[0], 2), torch.max_pool2d(x[0], 2))
        F.max_pool2d(x.bfloat16(), 2)
    assert counted == {"conv2d": 0, "max_pool2d": 0}
    with fct.enabled():
        F.conv2d(x, w)
    assert counted["conv2d"] == 1


def test_enable_is_per_thread_and_disable_undoes_it(counted):
    x, w = torch.randn(1, 2, 5, 5), torch.randn(3, 2, 3, 3)
    fct.enable()
    try:
        fct.enable()  # twice: still one mode
        F.conv2d(x, w)
        assert counted["conv2d"] == 1
        other = threading.Thread(target=lambda: F.conv2d(x, w))  # torch's function modes are per thread
        other.start()
        other.join()
        assert counted["conv2d"] == 1
    finally:
        fct.disable()
    fct.disable()  # nothing to undo
    F.conv2d(x, w)
    assert counted["conv2d"] == 1


KERAS_SCRIPT = textwrap.dedent("""
    import json, os, sys
    os.environ["KERAS_BACKEND"] = "torch"
    import numpy as np
    import keras
    import fastconv, fastconv.torch as fct

    calls = {"conv2d": 0, "max_pool2d": 0}
    for name in calls:
        inner = getattr(fastconv, name)
        def wrapper(*a, _inner=inner, _name=name, **k):
            calls[_name] += 1
            return _inner(*a, **k)
        setattr(fastconv, name, wrapper)

    def run(routed):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([
            keras.Input((12, 12, 3)),
            keras.layers.Conv2D(8, 3, padding="same", activation="relu"),
            keras.layers.DepthwiseConv2D(3, padding="valid"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Conv2D(6, 3, strides=2, padding="same"),
            keras.layers.Flatten(),
            keras.layers.Dense(4)])
        model.compile(optimizer=keras.optimizers.SGD(0.05),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        rng = np.random.default_rng(1)
        x = rng.standard_normal((16, 12, 12, 3)).astype("float32")
        y = rng.integers(0, 4, 16)
        if routed:
            with fct.enabled():
                hist = model.fit(x, y, batch_size=8, epochs=3, verbose=0, shuffle=False)
                out = model.predict(x, verbose=0)
        else:
            hist = model.fit(x, y, batch_size=8, epochs=3, verbose=0, shuffle=False)
            out = model.predict(x, verbose=0)
        return hist.history["loss"], out

    native_loss, native_out = run(False)
    assert calls == {"conv2d": 0, "max_pool2d": 0}
    loss, out = run(True)
    err = float(np.abs(out - native_out).max() / np.abs(native_out).max())
    print(json.dumps({"native": native_loss, "fastconv": loss, "out_err": err, "calls": calls}))
""")


def test_a_keras_model_trains_and_predicts_on_fastconv():
    if importlib.util.find_spec("keras") is None:  # the test extra installs it
        pytest.skip("keras is not installed (pip install keras==3.15.1)")
    env = dict(os.environ, KERAS_BACKEND="torch")
    proc = subprocess.run([sys.executable, "-c", KERAS_SCRIPT], capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    import json
    doc = json.loads(proc.stdout.strip().splitlines()[-1])
    # forward and backward: each step's convs and pool went through fastconv
    assert doc["calls"]["conv2d"] >= 3 * 2 * 3 and doc["calls"]["max_pool2d"] >= 2 * 3
    for a, b in zip(doc["native"], doc["fastconv"]):
        assert abs(a - b) <= 1e-4 * max(1.0, abs(a))
    assert doc["out_err"] <= 1e-4
