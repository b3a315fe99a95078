"""The data sets the pipeline knows by name, as numbers: (channels, image size, classes) as the data stage makes them
(Fashion-MNIST's 28x28 padded to 32x32), their training and test sizes, and a stand-in's default sizes. Torch-free:
the cost model reads them while Snakemake plans a run, before any job imports torch."""
from __future__ import annotations

SHAPES = {"fashion-mnist": (1, 32, 10), "cifar10": (3, 32, 10), "cifar100": (3, 32, 100)}
SIZES = {"fashion-mnist": (60000, 10000), "cifar10": (50000, 10000), "cifar100": (50000, 10000)}  # train, test images
STANDIN_SIZES = (5000, 1000)  # a stand-in's train, test images when data.train_limit / test_limit are not set
