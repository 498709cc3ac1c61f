"""The output pool (fastconv/common/outputs.py): a pooled buffer is handed out again only when
nothing but the pool references it, so no caller ever sees its result overwritten.  The pool's
size floor is lowered here so that small arrays exercise it."""
import os
import threading

import numpy as np
import pytest

import fastconv as fc
from fastconv import reference
from fastconv.common import outputs


@pytest.fixture
def pool(monkeypatch):
    monkeypatch.setattr(outputs, "POOL_MIN_BYTES", 1 << 12)
    outputs.set_pool_bytes(1 << 24)
    yield outputs
    outputs.set_pool_bytes(outputs._pool_bytes_from_environment())


def _addr(a) -> int:
    return a.__array_interface__["data"][0]


def test_a_buffer_is_reused_only_when_nothing_references_it(pool):
    a = pool.empty((64, 64), np.float32)
    first = _addr(a)
    del a
    b = pool.empty((64, 64), np.float32)
    assert _addr(b) == first  # dropped, so handed out again
    c = pool.empty((64, 64), np.float32)
    assert not np.shares_memory(b, c)  # b still lives
    view = b[3:5]
    del b
    d = pool.empty((64, 64), np.float32)
    assert not np.shares_memory(d, view)  # a view keeps its buffer in use
    flat = c.reshape(-1)
    del c
    e = pool.empty((64, 64), np.float32)
    assert not np.shares_memory(e, flat) and not np.shares_memory(e, view)
    assert e.shape == (64, 64) and e.dtype == np.float32 and e.flags.c_contiguous and e.flags.writeable


def test_kernel_results_are_not_overwritten_by_later_calls(pool, rng):
    """A kept output stays as computed while later calls of the same shape run (forward, the grad
    of input and the pool's max-pool values and indices)."""
    w = rng.standard_normal((8, 4, 3, 3)).astype(np.float32)
    xs = [rng.standard_normal((2, 4, 20, 20)).astype(np.float32) for _ in range(3)]
    for algo in ("direct", "direct_flat", "im2col", "winograd"):
        kept = [fc.conv2d(x, w, padding=1, algo=algo, backend="c") for x in xs]
        for x, y in zip(xs, kept):
            np.testing.assert_allclose(y, reference.conv2d(x, w, padding=1), rtol=1e-4, atol=1e-4)
        y = None
        for x in xs:  # each result dropped when the next is assigned: their buffer goes round
            y = fc.conv2d(x, w, padding=1, algo=algo, backend="c")
            np.testing.assert_allclose(y, reference.conv2d(x, w, padding=1), rtol=1e-4, atol=1e-4)
    gys = [rng.standard_normal((2, 8, 20, 20)).astype(np.float32) for _ in range(3)]
    kept = [fc.conv2d_backward(g, xs[0], w, padding=1, algo="im2col", backend="c")[0] for g in gys]
    for g, gx in zip(gys, kept):
        np.testing.assert_allclose(gx, reference.conv2d_backward(g, xs[0], w, padding=1)[0], rtol=1e-4, atol=1e-4)
    pooled = [fc.max_pool2d(x, 2, return_indices=True) for x in xs]
    for x, (y, idx) in zip(xs, pooled):
        want_y, want_idx = reference.max_pool2d(x, 2, return_indices=True)
        np.testing.assert_array_equal(y, want_y)
        np.testing.assert_array_equal(idx, want_idx)


def test_zeros_are_zero_from_a_used_buffer(pool):
    a = pool.empty((100, 50), np.float64)
    a.fill(7.0)
    del a
    z = pool.zeros((100, 50), np.float64)
    assert not z.any()


def test_a_torch_tensor_keeps_its_buffer(pool):
    torch = pytest.importorskip("torch")
    a = pool.empty((64, 64), np.float32)
    a.fill(1.0)
    t = torch.from_numpy(a)
    del a
    b = pool.empty((64, 64), np.float32)
    b.fill(2.0)
    assert float(t.sum()) == 64 * 64  # the tensor's memory was not handed out again


def test_the_bound_holds_and_zero_turns_the_pool_off(pool):
    pool.set_pool_bytes(3 * 64 * 64 * 4)
    held = [pool.empty((64, 64), np.float32) for _ in range(5)]
    busy, free = pool.pooled_bytes()
    assert busy + free <= 3 * 64 * 64 * 4
    assert sum(a.base is None for a in held) == 2  # past the bound: plain new arrays
    del held
    assert pool.pooled_bytes()[0] == 0
    pool.set_pool_bytes(0)
    assert pool.pooled_bytes() == (0, 0)  # the free buffers dropped
    assert pool.empty((64, 64), np.float32).base is None
    with pytest.raises(ValueError):
        pool.set_pool_bytes(-1)
    with pytest.raises(TypeError):
        pool.set_pool_bytes(1.5)


def test_threads_never_share_a_buffer(pool):
    errors, live = [], []
    lock = threading.Lock()

    def work(seed):
        r = np.random.default_rng(seed)
        for _ in range(200):
            a = pool.empty((32, 32), np.float32)
            a.fill(seed)
            with lock:
                live.append(a)
                if len(live) > 8:
                    live.pop(r.integers(len(live)))
            if not (a == seed).all():
                errors.append(seed)

    threads = [threading.Thread(target=work, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for i, a in enumerate(live):
        assert not any(np.shares_memory(a, b) for b in live[i + 1:])


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_child_forked_while_the_pool_is_locked_does_not_hang(pool):
    outputs._lock.acquire()
    try:
        pid = os.fork()
        if pid == 0:  # the child: its copy of the lock is new (os.register_at_fork)
            try:
                a = outputs.empty((64, 64), np.float32)
                os._exit(0 if a.shape == (64, 64) else 1)
            finally:
                os._exit(2)
    finally:
        outputs._lock.release()
    for _ in range(200):
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        threading.Event().wait(0.05)
    else:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        pytest.fail("the forked child hung on the pool's lock")
    assert os.waitstatus_to_exitcode(status) == 0


def test_the_environment_sets_the_bound(monkeypatch):
    monkeypatch.setenv("FASTCONV_OUTPUT_POOL_MB", "8")
    assert outputs._pool_bytes_from_environment() == 8 << 20
    monkeypatch.setenv("FASTCONV_OUTPUT_POOL_MB", "0")
    assert outputs._pool_bytes_from_environment() == 0
    monkeypatch.setenv("FASTCONV_OUTPUT_POOL_MB", "lots")
    with pytest.warns(RuntimeWarning, match="FASTCONV_OUTPUT_POOL_MB"):
        assert outputs._pool_bytes_from_environment() == outputs.DEFAULT_POOL_MB << 20
