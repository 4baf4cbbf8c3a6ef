#!/usr/bin/env python3
"""PyTorch DDP time-to-accuracy reference for bench/time_to_accuracy.sh: the fashion-cnn
network (bench/torch_ref.py's CNN), gloo over loopback, --procs processes (2) of
--threads threads (1), batch 64 per process, Adam 1e-3, on all 60,000 Fashion-MNIST
training images (real labels) split between the processes, shuffled each epoch.

  torch_tta.py [--procs 2] [--threads 1] [--epochs 8] [--target 0.90]

After every epoch rank 0 measures the test accuracy on the 10,000 test images (the
others wait), and prints one JSON line {"epoch", "seconds", "test_accuracy"} where
seconds counts from the first step, evaluation included (as Cohort's epochs include
their validation pass). Stops after --epochs, or at the end of the epoch that reaches
--target. Its last line is {"max_rss_mib": [...]}, each rank's peak resident set.
Set OMP_NUM_THREADS to --threads and OMP_WAIT_POLICY=PASSIVE.
"""
import argparse
import gzip
import json
import os
import resource
import struct
import sys
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP

from torch_ref import CNN

DIR = os.environ.get("FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist")


def idx(name):
    with gzip.open(os.path.join(DIR, name), "rb") as f:
        magic = struct.unpack(">I", f.read(4))[0]
        dims = struct.unpack(">" + "I" * (magic & 0xFF), f.read(4 * (magic & 0xFF)))
        return torch.frombuffer(bytearray(f.read()), dtype=torch.uint8).view(*dims)


def worker(rank, a, port):
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(a.threads)
    dist.init_process_group("gloo", rank=rank, world_size=a.procs)
    torch.manual_seed(42)
    x = idx("train-images-idx3-ubyte.gz").float().div_(255).unsqueeze(1)
    y = idx("train-labels-idx1-ubyte.gz").long()
    n = x.shape[0] // a.procs
    x, y = x[rank * n:(rank + 1) * n], y[rank * n:(rank + 1) * n]
    tx = idx("t10k-images-idx3-ubyte.gz").float().div_(255).unsqueeze(1)
    ty = idx("t10k-labels-idx1-ubyte.gz").long()
    net = DDP(CNN())
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    batch = 64
    g = torch.Generator().manual_seed(rank)
    dist.barrier()
    start = time.perf_counter()
    for epoch in range(1, a.epochs + 1):
        net.train()
        perm = torch.randperm(n, generator=g)
        for i in range(0, n - batch + 1, batch):
            b = perm[i:i + batch]
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(net(x[b]), y[b]).backward()
            opt.step()
        acc = torch.zeros(1)
        if rank == 0:
            net.eval()
            with torch.no_grad():
                correct = sum((net.module(tx[i:i + 1000]).argmax(1) == ty[i:i + 1000]).sum().item()
                              for i in range(0, tx.shape[0], 1000))
            acc[0] = correct / tx.shape[0]
            print(json.dumps({"epoch": epoch, "seconds": time.perf_counter() - start,
                              "test_accuracy": acc.item()}), flush=True)
        dist.broadcast(acc, 0)
        if acc.item() >= a.target:
            break
    # Peak resident set of every rank (goal 5: a worker's peak RSS against PyTorch's
    # process), gathered to rank 0; ru_maxrss is in KiB on Linux.
    rss = torch.tensor([resource.getrusage(resource.RUSAGE_SELF).ru_maxrss], dtype=torch.int64)
    all_rss = [torch.zeros(1, dtype=torch.int64) for _ in range(a.procs)]
    dist.all_gather(all_rss, rss)
    if rank == 0:
        print(json.dumps({"max_rss_mib": [round(r.item() / 1024, 1) for r in all_rss]}), flush=True)
    dist.destroy_process_group()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--target", type=float, default=0.90)
    ap.add_argument("--port", type=int, default=29534)
    a = ap.parse_args()
    mp.spawn(worker, args=(a, a.port), nprocs=a.procs, join=True)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
