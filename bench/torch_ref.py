#!/usr/bin/env python3
"""PyTorch reference for `cohort bench compute`: the same networks, --threads threads (1).

  torch_ref.py cnn --steps N   fashion-cnn.yaml's CNN (conv 32-3, pool 2, conv 64-3, pool 2,
                               dense 128, 10 classes, batch 64) on Fashion-MNIST
  torch_ref.py mlp --steps N   attrition-mlp.yaml's MLP (48 inputs, hidden 64-32 relu,
                               1 logit, BCE, batch 32) on random features of the same shape
  torch_ref.py lstm --steps N  performance-lstm.yaml's network (torch.nn.LSTM: 7 features,
                               hidden 32, lookback 12, the last step's hidden state into
                               Linear(32, 1), MSE, batch 64) on random sequences
  torch_ref.py cifar --steps N bench/cifar-cnn.yaml's CIFAR-shaped CNN (32x32x3, conv
                               64-3/64-3/128-3/128-3 with padding 1, each relu and pool 2,
                               dense 256, 10 classes, batch 64) on random images

Each step is forward + backward (gradients zeroed, no optimizer update), like a Cohort
worker's Gradient call. Prints one JSON line with the fields of `cohort bench compute`.
Set OMP_NUM_THREADS to --threads and OMP_WAIT_POLICY=PASSIVE in the environment
(compare.sh does).
"""
import argparse
import gzip
import json
import os
import struct
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

FASHION = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"


def fashion(limit=8192):
    with gzip.open(os.environ.get("FASHION_MNIST", FASHION), "rb") as f:
        _, n, h, w = struct.unpack(">IIII", f.read(16))
        n = min(n, limit)
        buf = f.read(n * h * w)
    x = torch.frombuffer(bytearray(buf), dtype=torch.uint8).float().div_(255).view(n, 1, h, w)
    y = torch.randint(0, 10, (n,), generator=torch.Generator().manual_seed(0))
    return x, y


class CNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.c0 = nn.Conv2d(1, 32, 3)
        self.c1 = nn.Conv2d(32, 64, 3)
        self.d0 = nn.Linear(64 * 5 * 5, 128)
        self.out = nn.Linear(128, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.c0(x)), 2)
        x = F.max_pool2d(F.relu(self.c1(x)), 2)
        x = F.relu(self.d0(x.flatten(1)))
        return self.out(x)


class LSTMNet(nn.Module):
    def __init__(self, features=7, hidden=32):
        super().__init__()
        self.lstm = nn.LSTM(features, hidden, batch_first=True)
        self.out = nn.Linear(hidden, 1)

    def forward(self, x):
        h, _ = self.lstm(x)
        return self.out(h[:, -1])


class CIFAR(nn.Module):
    def __init__(self):
        super().__init__()
        self.convs = nn.ModuleList([nn.Conv2d(3, 64, 3, padding=1), nn.Conv2d(64, 64, 3, padding=1),
                                    nn.Conv2d(64, 128, 3, padding=1), nn.Conv2d(128, 128, 3, padding=1)])
        self.d0 = nn.Linear(128 * 2 * 2, 256)
        self.out = nn.Linear(256, 10)

    def forward(self, x):
        for c in self.convs:
            x = F.max_pool2d(F.relu(c(x)), 2)
        x = F.relu(self.d0(x.flatten(1)))
        return self.out(x)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model", choices=["cnn", "mlp", "lstm", "cifar"])
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--mlp-inputs", type=int, default=48)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(1)
    if a.model == "cnn":
        net, batch = CNN(), 64
        x, y = fashion()
        loss_fn = lambda out, t: F.cross_entropy(out, t)
    elif a.model == "cifar":
        net, batch = CIFAR(), 64
        x = torch.rand(1024, 3, 32, 32)
        y = torch.randint(0, 10, (1024,))
        loss_fn = lambda out, t: F.cross_entropy(out, t)
    elif a.model == "lstm":
        net, batch = LSTMNet(), 64
        x = torch.randn(4096, 12, 7)
        y = torch.randn(4096, 1)
        loss_fn = lambda out, t: F.mse_loss(out, t)
    else:
        net = nn.Sequential(nn.Linear(a.mlp_inputs, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 1))
        batch = 32
        x = torch.randn(2400, a.mlp_inputs)
        y = torch.randint(0, 2, (2400, 1)).float()
        loss_fn = lambda out, t: F.binary_cross_entropy_with_logits(out, t)
    n = x.shape[0]
    pos = 0

    def step():
        nonlocal pos
        xb, yb = x[pos:pos + batch], y[pos:pos + batch]
        pos = (pos + batch) % (n - batch)
        net.zero_grad(set_to_none=False)
        loss_fn(net(xb), yb).backward()

    for _ in range(a.warmup):
        step()
    times = []
    cpu0 = time.process_time()
    start = time.perf_counter()
    for _ in range(a.steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    total = time.perf_counter() - start
    cpu = time.process_time() - cpu0
    times.sort()
    print(json.dumps({
        "model": "torch-" + a.model, "batch": batch, "steps": a.steps,
        "samples_per_s": batch * a.steps / total, "step_ms_p50": times[len(times) // 2] * 1e3,
        "alloc_bytes_per_step": None, "cpu_ms_per_step": cpu / a.steps * 1e3, "torch": torch.__version__, "threads": torch.get_num_threads(),
    }))


if __name__ == "__main__":
    main()
