"""Cuts the built-in training sample (inceptorch/sample/builtin.npz) from the Fashion-MNIST training set.

The first images of each class, in the file's order, go to the training part, the next ones to the
validation part: the same file every time. The .npz holds uint8 arrays train_images, train_labels,
val_images, val_labels, and class_names.

    python tools/make_builtin_sample.py --root ../shared/data
"""

import argparse
from pathlib import Path

import numpy as np

from inceptorch.sources import FASHION_CLASSES, read_idx

OUT = Path(__file__).resolve().parent.parent / "inceptorch" / "sample" / "builtin.npz"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="../shared/data", help="folder holding FashionMNIST/raw")
    parser.add_argument("--train-per-class", type=int, default=200)
    parser.add_argument("--val-per-class", type=int, default=50)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    raw = Path(args.root) / "FashionMNIST" / "raw"
    images = read_idx(raw / "train-images-idx3-ubyte.gz")
    labels = read_idx(raw / "train-labels-idx1-ubyte.gz")
    train, val = [], []
    for label in range(len(FASHION_CLASSES)):
        index = np.flatnonzero(labels == label)
        train.append(index[:args.train_per_class])
        val.append(index[args.train_per_class:args.train_per_class + args.val_per_class])
    train, val = np.sort(np.concatenate(train)), np.sort(np.concatenate(val))
    np.savez_compressed(args.out, train_images=images[train], train_labels=labels[train],
                        val_images=images[val], val_labels=labels[val], class_names=np.array(FASHION_CLASSES))
    print(f"{args.out}: {len(train)} training and {len(val)} validation images, "
          f"{args.out.stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
