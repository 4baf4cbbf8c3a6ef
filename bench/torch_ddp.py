#!/usr/bin/env python3
"""PyTorch DistributedDataParallel reference for a 2-worker `cohort dev` run of
jobs/examples/fashion-cnn.yaml: the same CNN (bench/torch_ref.py), batch 64 per process,
Adam 1e-3, gloo backend over loopback, --procs processes (2) of --threads threads (1).

  torch_ddp.py [--procs 2] [--threads 1] [--steps 300] [--warmup 20]

Each process trains on its own shard of Fashion-MNIST's training images; every step is
forward, backward (gradients all-reduced by DDP) and the optimizer update, like a sync
step of Cohort (where the parameter servers own the optimizer). Prints one JSON line:
the cluster's training samples/s (all processes) over the timed steps, and the median
step time of rank 0. Set OMP_NUM_THREADS to --threads and OMP_WAIT_POLICY=PASSIVE.
"""
import argparse
import json
import os
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP

from torch_ref import CNN, fashion


def worker(rank, a, port, out):
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(a.threads)
    dist.init_process_group("gloo", rank=rank, world_size=a.procs)
    torch.manual_seed(1)
    x, y = fashion(limit=16384)
    n = x.shape[0] // a.procs
    x, y = x[rank * n:(rank + 1) * n], y[rank * n:(rank + 1) * n]
    net = DDP(CNN())
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    batch, pos = 64, 0
    times = []

    def step():
        nonlocal pos
        xb, yb = x[pos:pos + batch], y[pos:pos + batch]
        pos = (pos + batch) % (n - batch)
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(xb), yb).backward()
        opt.step()

    for _ in range(a.warmup):
        step()
    dist.barrier()
    start = time.perf_counter()
    for _ in range(a.steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    dist.barrier()
    total = time.perf_counter() - start
    if rank == 0:
        times.sort()
        out.put({
            "model": "torch-ddp-cnn", "procs": a.procs, "threads": a.threads, "batch": batch,
            "steps": a.steps, "samples_per_s": a.procs * batch * a.steps / total,
            "step_ms_p50": times[len(times) // 2] * 1e3, "torch": torch.__version__,
        })
    dist.destroy_process_group()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--port", type=int, default=29533)
    a = ap.parse_args()
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=worker, args=(r, a, a.port, out)) for r in range(a.procs)]
    for p in procs:
        p.start()
    res = out.get()
    for p in procs:
        p.join()
    print(json.dumps(res))


if __name__ == "__main__":
    main()
