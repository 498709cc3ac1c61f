"""A patched model trained with DataLoader workers (fork) and under DistributedDataParallel (gloo,
2 local processes), against native torch doing the same: the same losses step by step."""
import os
import subprocess
import sys
import textwrap

import pytest

torch = pytest.importorskip("torch")
import fastconv.torch as fct  # noqa: E402

nn = torch.nn


def _model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(8, 12, 3, padding=1, groups=4), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(12 * 4 * 4, 10)).double()


class _Digits(torch.utils.data.Dataset):
    """64 fixed 1x16x16 images with labels, the same in every process."""

    def __init__(self):
        g = torch.Generator().manual_seed(7)
        self.x = torch.randn(64, 1, 16, 16, generator=g, dtype=torch.float64)
        self.y = torch.randint(0, 10, (64,), generator=g)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


def _train(model, loader, epochs=2):
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    losses = []
    for _ in range(epochs):
        for x, y in loader:
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            losses.append(loss.item())
    return losses


def test_dataloader_workers_forked_after_kernels_ran_train_as_native():
    # fastconv's kernels have run in this process before the workers fork (every epoch forks
    # them anew): the workers only load data, the model trains here on fastconv's threads
    data = _Digits()
    native = _train(_model(), torch.utils.data.DataLoader(data, batch_size=16, shuffle=False))
    patched = fct.patch(_model())
    patched(data.x[:2])  # kernels run before the first fork
    loader = torch.utils.data.DataLoader(data, batch_size=16, shuffle=False, num_workers=2,
                                         multiprocessing_context="fork")
    losses = _train(patched, loader)
    assert len(losses) == len(native) == 8
    for a, b in zip(native, losses):
        assert abs(a - b) <= 1e-9 * max(1.0, abs(a))


DDP_SCRIPT = textwrap.dedent("""
    import json, os, sys
    import torch
    import torch.distributed as dist
    import torch.multiprocessing as mp
    sys.path.insert(0, os.environ["FASTCONV_TEST_DIR"])
    from test_torch_processes import _Digits, _model, _train

    def worker(rank, world, backend_name, port, out):
        # two processes on the machine's cores, one thread each: OMP_NUM_THREADS=1 (set by the
        # parent, as torchrun does) divides torch's threads and fastconv's alike
        import fastconv, fastconv.torch as fct
        assert torch.get_num_threads() == 1 and fastconv.get_num_threads() == 1
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        dist.init_process_group("gloo", rank=rank, world_size=world)
        model = _model()
        if backend_name == "fastconv":
            fct.patch(model)
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        data = _Digits()
        sampler = torch.utils.data.distributed.DistributedSampler(data, world, rank, shuffle=False)
        loader = torch.utils.data.DataLoader(data, batch_size=8, sampler=sampler)
        losses = _train(ddp, loader)
        out[rank] = losses
        dist.destroy_process_group()

    if __name__ == "__main__":
        result = {}
        for i, name in enumerate(("torch", "fastconv")):
            with mp.Manager() as manager:
                out = manager.dict()
                mp.spawn(worker, args=(2, name, int(sys.argv[1]) + i, out), nprocs=2, join=True)
                result[name] = [out[0], out[1]]
        print(json.dumps(result))
""")


def test_ddp_with_gloo_on_two_processes_trains_as_native(tmp_path):
    import socket
    with socket.socket() as s:  # a free loopback port (and the next one) for the two runs
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    env = dict(os.environ, FASTCONV_TEST_DIR=os.path.dirname(__file__), OMP_NUM_THREADS="1")
    env.pop("FASTCONV_NUM_THREADS", None)
    proc = subprocess.run([sys.executable, str(script), str(port)], capture_output=True, text=True,
                          timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    import json
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    for rank in range(2):
        native, patched = result["torch"][rank], result["fastconv"][rank]
        assert len(native) == len(patched) == 8
        for a, b in zip(native, patched):
            assert abs(a - b) <= 1e-9 * max(1.0, abs(a))
