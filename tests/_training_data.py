"""A small generated image-classification task for the training tests: each class is a bright bar
(two horizontal, two vertical positions) jittered by a few pixels on a noisy grey background."""

import numpy as np

CLASSES = ["top", "bottom", "left", "right"]


def bar_images(n: int, seed: int, size: int = 28) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % len(CLASSES)
    images = rng.integers(0, 90, size=(n, size, size)).astype(np.uint8)
    for image, label in zip(images, labels):
        at = (size // 4 if label % 2 == 0 else 3 * size // 4) + rng.integers(-2, 3)
        if label < 2:
            image[at - 2:at + 2, 3:-3] = 230
        else:
            image[3:-3, at - 2:at + 2] = 230
    return images, labels


def write_bars_npz(path, n_train: int = 256, n_val: int = 128, size: int = 28):
    """An .npz in the format ``--data FILE.npz`` reads."""
    train_images, train_labels = bar_images(n_train, seed=1, size=size)
    val_images, val_labels = bar_images(n_val, seed=2, size=size)
    np.savez_compressed(path, train_images=train_images, train_labels=train_labels, val_images=val_images,
                        val_labels=val_labels, class_names=np.array(CLASSES))
    return path
