"""benchmarks/bench_vs_torch.py: the bench's PyTorch twin (skipped where torch is not installed).

The script lives beside the package, not in it, so its folder goes on sys.path here.
"""
import sys
from pathlib import Path

import numpy as np
import pytest

from minifrcnn import bench
from minifrcnn.joint_training import JointTraining
from test_bench import tiny_config

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_vs_torch  # noqa: E402


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_torch_twin_of_the_train_step_computes_our_losses(device):
    """The side-by-side torch step is the same computation: same losses, step after step. On
    the GPU (where RoI pooling is torchvision.ops.roi_pool) against our step on the GPU."""
    torch = pytest.importorskip("torch")
    if device == "cuda":
        from minifrcnn.backend import DeviceError, resolve_device
        try:
            resolve_device("cuda")
        except DeviceError as exc:
            pytest.skip(str(exc))
        if not torch.cuda.is_available() or bench_vs_torch._torchvision() is None:
            pytest.skip("torch without CUDA, or torchvision absent")
    twin = bench_vs_torch.TorchTwin(device)
    cfg, _, model, optimizer, batch = bench.default_step_setup(device, tiny_config(), num_images=2)
    images, sizes, boxes, labels, scales = batch
    step = JointTraining(model)
    _, samples = step.forward(images, sizes, boxes, labels, np.random.default_rng(0),
                              scales=scales)
    torch_step = twin.train_step(model, cfg, images, samples)
    for _ in range(2):                     # the second step checks the updates agree too
        model.zero_grad()
        terms, _ = step.forward(images, sizes, boxes, labels, None, scales=scales, samples=samples)
        step.backward()
        optimizer.step()
        assert torch_step() == pytest.approx(float(terms["total"]), rel=1e-4)


def test_torch_columns_when_torch_is_installed():
    pytest.importorskip("torch")
    lines = []
    rows = bench_vs_torch.run("cpu", repeat=1, only=["pool"], out=lines.append)
    assert "; torch " in lines[0]
    assert "torch (ms) | ours / torch |" in lines[1]
    assert len(rows) == 3 and all(r["torch_ms"] > 0 for r in rows)
