"""The parser's part of a cache build: forward + argmax of one batch,
queued on the GPU one batch ahead."""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from fse_plugin.common import to_input
from fse_plugin.common.runtime import mixed_precision

__all__ = ["Inference", "Masks"]

Masks = Callable[[], np.ndarray]
"""What ``Inference.launch`` returns: call it for the batch's uint8 [B,H,W] masks
(waits for the GPU)."""


class Inference:
    """Parser forward + argmax of one batch; on CUDA the work is queued and collected one batch
    later.

    CPU: ``parsing.predict_masks`` (what ``parsing.forward_throughput`` measures). CUDA: the uint8
    batch is copied into one of two pinned buffers (so the decoder's slot is free at once) and
    uploaded with a non_blocking copy; channels_last (via ``common.to_input``'s NHWC view),
    autocast, argmax downloaded as uint8 into pinned memory, a CUDA event to wait on. cuDNN runs
    deterministically, so masks repeat exactly across runs (resume byte-identity). ``precision``:
    fp32, or autocast to fp16/bf16.
    """

    def __init__(self, model: torch.nn.Module, device: torch.device, precision: str = "fp32"):
        self.device, self.precision = device, precision
        self.cuda = device.type == "cuda"
        if self.cuda:
            torch.backends.cudnn.benchmark = False
            torch.backends.cudnn.deterministic = True
            model = model.to(device, memory_format=torch.channels_last)
        self.model = model.eval()
        self._staging: list = [None, None]  # (pinned uint8 buffer, event after its upload)
        self._turn = 0

    def _upload(self, images: np.ndarray) -> torch.Tensor:
        k, self._turn = self._turn, 1 - self._turn
        buf, uploaded = self._staging[k] or (None, None)
        if buf is None or len(buf) < len(images):
            buf = torch.empty(images.shape, dtype=torch.uint8, pin_memory=True)
        elif uploaded is not None:
            # its previous upload (two batches ago) must be done before refilling
            uploaded.synchronize()
        part = buf[:len(images)]
        part.numpy()[...] = images
        x = part.to(self.device, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        self._staging[k] = (buf, event)
        return x

    def launch(self, images: np.ndarray) -> Masks:
        """Queue one batch of uint8 ``[B,H,W,3]`` images; returns having read them."""
        if not self.cuda:
            from fse_plugin.parsing import predict_masks
            masks = predict_masks(self.model, images, batch_size=len(images), device=self.device,
                                  precision=self.precision)
            return lambda: masks
        x = self._upload(images)
        with torch.inference_mode(), mixed_precision(self.device, self.precision):
            m = self.model(to_input(x, channels_last=True)).argmax(1).to(torch.uint8)
        host = torch.empty(m.shape, dtype=torch.uint8, pin_memory=True)
        host.copy_(m, non_blocking=True)
        done = torch.cuda.Event()
        done.record()

        def result() -> np.ndarray:
            done.synchronize()
            return host.numpy()
        return result

    def __repr__(self) -> str:
        return f"{type(self).__name__}(device={self.device}, precision={self.precision})"
