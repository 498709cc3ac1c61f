"""The training example, shortened: fastconv's backend tracks native torch from the same seed and learns."""
import importlib.util
import pathlib

import pytest

pytest.importorskip("torch")
pytest.importorskip("sklearn")

EXAMPLE = pathlib.Path(__file__).resolve().parents[1] / "examples" / "train_lenet_digits.py"


def test_lenet_on_digits_tracks_native_torch_and_learns():
    spec = importlib.util.spec_from_file_location("train_lenet_digits", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    ours = example.train("fastconv", epochs=4, log=lambda *_: None)
    native = example.train("torch", epochs=4, log=lambda *_: None)
    for a, b in zip(ours, native):  # same seed, same batches: only float rounding may differ
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-3), (a, b)
    assert ours[-1]["loss"] < 0.5 * ours[0]["loss"]
    assert ours[-1]["accuracy"] > 0.90
    assert len(example.chosen_kernels()) == 2
