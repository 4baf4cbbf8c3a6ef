#!/usr/bin/env python3
"""Write a synthetic CIFAR-shaped data set for bench/cifar-cnn.yaml: N random 3x32x32
images (IDX, 4-D unsigned bytes [n, 3, 32, 32]) and N random labels 0-9 (IDX, 1-D), in
bench/data/ (or the directory given). Only the shapes matter: it is for speed runs.

  bench/gen_cifar_synth.py [DIR] [N]
"""
import os
import random
import struct
import sys


def main():
    d = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "data")
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 2048
    os.makedirs(d, exist_ok=True)
    rng = random.Random(19)
    with open(os.path.join(d, "cifar-synth-images-idx4-ubyte"), "wb") as f:
        f.write(struct.pack(">I", 0x0804) + struct.pack(">IIII", n, 3, 32, 32))
        f.write(bytes(rng.getrandbits(8) for _ in range(n * 3 * 32 * 32)))
    with open(os.path.join(d, "cifar-synth-labels-idx4-ubyte"), "wb") as f:
        f.write(struct.pack(">I", 0x0801) + struct.pack(">I", n))
        f.write(bytes(rng.randrange(10) for _ in range(n)))


if __name__ == "__main__":
    main()
