"""What a parser trains on: aligned faces with their label maps, augmented per sample, and the class
weights of its loss."""
from __future__ import annotations

import numpy as np
import torch

from fse_plugin.labels import NUM_CLASSES
from fse_plugin.parsing.augment import ParserAugment

__all__ = ["ParsingDataset", "class_weights"]


class ParsingDataset(torch.utils.data.Dataset):
    """(uint8 HxWx3 face, int64 HxW labels) of the selected indices of an :class:`AlignedSet`."""

    def __init__(self, images: np.ndarray, masks: np.ndarray, indices: np.ndarray,
                 augment: ParserAugment | None = None, seed: int = 0) -> None:
        self.images, self.masks, self.indices = images, masks, np.asarray(indices, dtype=np.int64)
        self.augment, self.seed, self.epoch = augment, int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        j = int(self.indices[i])
        img, mask = np.array(self.images[j]), np.array(self.masks[j])
        if self.augment is not None:
            img, mask = self.augment(img, mask, np.random.default_rng((self.seed, self.epoch, j)))
        return torch.from_numpy(img), torch.from_numpy(mask.astype(np.int64))


def class_weights(masks: np.ndarray, n_classes: int = NUM_CLASSES,
                  power: float = 0.5) -> torch.Tensor:
    """Cross-entropy weights ``(pixels / class pixels) ** power``, mean 1 over the classes present.

    Why: eyes, brows and lips cover a tiny share of an aligned face each; plain cross-entropy learns
    them long after skin and hair, while mean F1 counts every class equally. Power 0.5 learned the
    small classes much sooner in a one-batch overfitting test; power 1 starves the background.
    ``power=0`` gives plain cross-entropy.
    """
    counts = np.zeros(n_classes, np.int64)
    for s in range(0, len(masks), 256):
        chunk = np.asarray(masks[s:s + 256]).ravel()
        counts += np.bincount(chunk[chunk < n_classes], minlength=n_classes)[:n_classes]
    present = counts > 0
    w = np.ones(n_classes)
    if present.any():
        w[present] = (counts.sum() / counts[present]) ** power
        w[present] /= w[present].mean()
    return torch.tensor(w, dtype=torch.float32)
