"""Face parser: FSErasing's U-Net with a ResNet-18 encoder, its checkpoints, training and evaluation.

The module and parameter names follow the published ``UNet_res18`` (gsisaoki/FSErasing,
``models/unet.py``) so that its released checkpoint loads with :func:`load_parser`; the code is our own.
Training reads a FaceSynthetics-layout folder, aligns it once to ArcFace 112x112 (cached as ``.npy``
files that every epoch and DataLoader worker memory-maps) and keeps left/right labels right under
flips. The same model later labels millions of recognition images (``fse cache build``), so
:func:`predict_masks` is the batched inference entry point (CPU or CUDA, bf16, channels_last).
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, Mapping, NamedTuple, Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import BasicBlock, conv1x1, conv3x3
from torchvision.transforms.v2 import functional as TF

from fse_plugin.align import align_image, align_mask, five_points_from_68
from fse_plugin.common import FSEError, autocast, dist_env, resolve_device, to_input, warmup_cosine
from fse_plugin.erasing import flip_pair
from fse_plugin.labels import CLASSES, LABEL_SET, NUM_CLASSES

IGNORE_INDEX = 255
"""Label value that the loss and the metrics skip (FaceSynthetics' IGNORE, pixels an augmentation invents)."""

DEFAULT_FEATURE_SCALE = 4
"""Channel divisor of the default parser (widths 16..256, 3.6M parameters, 1.6 GFLOP per 112x112 face).

Measured on synthetic FaceSynthetics data (benchmarks/README.md, "## parser"): after the same short
training, feature_scale 4 reaches the mean F1 of 2 and 1 within noise while costing 1/16 of the
FLOPs of the reference (1) and running ~20x faster on 2 CPU threads; 8 is cheaper still but loses
accuracy on the small classes (eyes, brows). Precomputing masks for MS1MV3 (5.2M faces) is
then ~8 PFLOP instead of ~130, and CPU training in minutes becomes possible. Load the published
checkpoint (feature_scale 1) with :func:`load_parser`, which reads the scale from the tensors.
"""
_BASE_WIDTHS = (64, 128, 256, 512, 1024)
_FORMAT = "fse_plugin.parser/1"


# ---------------------------------------------------------------------------------------------- model

class DoubleConv(nn.Module):
    """Two 3x3 conv+BN+ReLU (the ``unetConv2`` the published code imports but never defines)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, 1, 1), nn.BatchNorm2d(out_channels),
                                   nn.ReLU(inplace=True))
        self.conv2 = nn.Sequential(nn.Conv2d(out_channels, out_channels, 3, 1, 1), nn.BatchNorm2d(out_channels),
                                   nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x))


class UpBlock(nn.Module):
    """Decoder step: 2x transposed conv, pad to the skip's size, concat [skip, up], DoubleConv."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = DoubleConv(in_channels, out_channels)
        self.up = nn.ConvTranspose2d(in_channels, out_channels, kernel_size=2, stride=2)

    def forward(self, skip: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        x = self.up(x)
        x = F.pad(x, [0, skip.shape[3] - x.shape[3], 0, skip.shape[2] - x.shape[2]])
        return self.conv(torch.cat([skip, x], 1))


def _stage(cin: int, cout: int) -> nn.Sequential:
    down = nn.Sequential(conv1x1(cin, cout, stride=2), nn.BatchNorm2d(cout))
    return nn.Sequential(BasicBlock(cin, cout, stride=2, downsample=down), BasicBlock(cout, cout))


def parser_widths(feature_scale: int) -> list[int]:
    """Channel widths of the five levels; ``feature_scale`` must divide 64 so every level doubles exactly."""
    if isinstance(feature_scale, bool) or not isinstance(feature_scale, (int, np.integer)) \
            or feature_scale < 1 or 64 % feature_scale:
        raise ValueError(f"feature_scale must be a divisor of 64 (1, 2, 4, 8, 16, 32, 64), got {feature_scale!r}")
    return [w // int(feature_scale) for w in _BASE_WIDTHS]


class UNetRes18(nn.Module):
    """U-Net whose encoder is ResNet-18-like (REFERENCE.md section 5), logits at input resolution.

    Stem 3x3 stride-1 conv+BN+ReLU (no 7x7, no max-pool: 112x112 faces are small), four stages of two
    BasicBlocks (stride 2 first), widths ``[64, 128, 256, 512, 1024] / feature_scale``, four
    transposed-conv decoder steps with skip connections and a 1x1 head. Attribute names match the
    published ``UNet_res18`` so its state_dict loads unchanged.
    """

    def __init__(self, n_classes: int = NUM_CLASSES, feature_scale: int = DEFAULT_FEATURE_SCALE,
                 in_channels: int = 3) -> None:
        super().__init__()
        w = parser_widths(feature_scale)
        self.n_classes, self.feature_scale, self.in_channels = int(n_classes), int(feature_scale), int(in_channels)
        self.conv0 = nn.Sequential(conv3x3(in_channels, w[0]), nn.BatchNorm2d(w[0]), nn.ReLU(inplace=True))
        self.conv1 = _stage(w[0], w[1])
        self.conv2 = _stage(w[1], w[2])
        self.conv3 = _stage(w[2], w[3])
        self.conv4 = _stage(w[3], w[4])
        self.up_concat4 = UpBlock(w[4], w[3])
        self.up_concat3 = UpBlock(w[3], w[2])
        self.up_concat2 = UpBlock(w[2], w[1])
        self.up_concat1 = UpBlock(w[1], w[0])
        self.final = nn.Conv2d(w[0], n_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c0 = self.conv0(x)
        c1 = self.conv1(c0)
        c2 = self.conv2(c1)
        c3 = self.conv3(c2)
        c4 = self.conv4(c3)
        x = self.up_concat4(c3, c4)
        x = self.up_concat3(c2, x)
        x = self.up_concat2(c1, x)
        x = self.up_concat1(c0, x)
        return self.final(x)

    def extra_repr(self) -> str:
        return f"n_classes={self.n_classes}, feature_scale={self.feature_scale}, in_channels={self.in_channels}"


# ------------------------------------------------------------------------------------------ checkpoints

class ParserCheckpointError(FSEError):
    """A parser checkpoint that cannot be read or does not fit the model; the message names the file."""


_WRAPPER_KEYS = ("model", "state_dict", "model_state_dict", "net")
_PREFIXES = ("module.", "_orig_mod.")  # DistributedDataParallel, torch.compile
_META_KEYS = ("feature_scale", "n_classes", "in_channels", "label_set")


def _bare(model: nn.Module) -> nn.Module:
    """The model inside DDP / torch.compile wrappers."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def _unwrap_state_dict(obj: Any, path: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Find the state_dict inside the usual wrappers; collect metadata found on the way."""
    meta: dict[str, Any] = {}
    for _ in range(4):
        if not isinstance(obj, Mapping) or not obj:
            raise ParserCheckpointError(f"{path}: expected a state_dict or a dict holding one, got {type(obj).__name__}")
        if all(isinstance(v, torch.Tensor) for v in obj.values()):
            break
        meta.update({k: obj[k] for k in _META_KEYS if k in obj and k not in meta})
        inner = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            raise ParserCheckpointError(
                f"{path}: no state_dict found: top-level keys are {sorted(map(str, obj))[:20]} "
                f"(expected tensors, or one of {_WRAPPER_KEYS} holding them)")
        obj = inner
    else:
        raise ParserCheckpointError(f"{path}: state_dict nested too deeply")
    sd = {}
    for k, v in obj.items():
        k = str(k)
        stripped = True
        while stripped:
            stripped = False
            for p in _PREFIXES:
                if k.startswith(p):
                    k, stripped = k[len(p):], True
        sd[k] = v
    return sd, meta


def _infer_architecture(sd: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> dict[str, int]:
    """feature_scale / n_classes / in_channels from metadata, else from the stem and head shapes."""
    arch = {"feature_scale": DEFAULT_FEATURE_SCALE, "n_classes": NUM_CLASSES, "in_channels": 3}
    stem, head = sd.get("conv0.0.weight"), sd.get("final.weight")
    if stem is not None and stem.ndim == 4:
        if stem.shape[0] and 64 % stem.shape[0] == 0:
            arch["feature_scale"] = 64 // stem.shape[0]
        arch["in_channels"] = int(stem.shape[1])
    if head is not None and head.ndim == 4:
        arch["n_classes"] = int(head.shape[0])
    for k in ("feature_scale", "n_classes", "in_channels"):
        if k in meta:
            arch[k] = int(meta[k])
    return arch


def _listing(title: str, items: Sequence[str], limit: int = 12) -> str:
    more = f" ... and {len(items) - limit} more" if len(items) > limit else ""
    return f"\n  {title} ({len(items)}): " + ", ".join(items[:limit]) + more


def load_parser(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> UNetRes18:
    """A :class:`UNetRes18` in eval mode from a checkpoint file.

    Accepts a plain state_dict, ``{'model': ...}`` / ``{'state_dict': ...}`` wrappers (ours, the
    published one, Lightning-style) and ``module.`` prefixes, always with ``weights_only=True``.
    Without metadata the architecture is inferred from the stem and head shapes. Missing, unexpected
    and wrongly shaped keys are reported together in one :class:`ParserCheckpointError`.
    """
    path = str(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"parser checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # unpickling refused, truncated zip, not a torch file ...
        raise ParserCheckpointError(f"{path}: cannot be read as a weights-only torch checkpoint "
                                    f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from e
    sd, meta = _unwrap_state_dict(obj, path)
    if "label_set" in meta and meta["label_set"] != LABEL_SET:
        raise ParserCheckpointError(f"{path}: label_set is {meta['label_set']!r}, this plugin needs {LABEL_SET!r}")
    arch = _infer_architecture(sd, meta)
    try:
        model = UNetRes18(**arch)
    except ValueError as e:
        raise ParserCheckpointError(f"{path}: {e}") from e
    expected = model.state_dict()
    missing = [k for k in expected if k not in sd and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in sd if k not in expected]
    shaped = [f"{k} file {list(sd[k].shape)} model {list(v.shape)}" for k, v in expected.items()
              if k in sd and tuple(sd[k].shape) != tuple(v.shape)]
    if missing or unexpected or shaped:
        source = "metadata" if "feature_scale" in meta else "tensor shapes"
        raise ParserCheckpointError(
            f"{path}: does not fit UNetRes18(feature_scale={arch['feature_scale']}, n_classes={arch['n_classes']}, "
            f"in_channels={arch['in_channels']}) (architecture from {source}):"
            + (_listing("missing keys", missing) if missing else "")
            + (_listing("unexpected keys", unexpected) if unexpected else "")
            + (_listing("wrongly shaped", shaped) if shaped else ""))
    model.load_state_dict(sd, strict=False)  # num_batches_tracked may be absent in old files
    return model.eval()


def _check_meta(value: Any, where: str) -> None:
    """Metadata must survive ``torch.load(weights_only=True)``; refuse anything else when saving."""
    if value is None or isinstance(value, (str, int, float, bool, torch.Tensor)):
        return
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_meta(v, f"{where}[{i}]")
        return
    if isinstance(value, Mapping):
        for k, v in value.items():
            if not isinstance(k, (str, int)):
                raise TypeError(f"checkpoint metadata key {where}[{k!r}] must be str or int")
            _check_meta(v, f"{where}[{k!r}]")
        return
    raise TypeError(f"checkpoint metadata {where} has type {type(value).__name__}; "
                    f"only tensors, numbers, strings, None and lists/dicts of them load with weights_only=True")


def save_parser(model: nn.Module, path: str | os.PathLike, **meta: Any) -> Path:
    """Write ``{'model': state_dict, 'feature_scale', 'n_classes', 'in_channels', 'label_set': 'fse25', **meta}``.

    Written to a temporary file and renamed, so a crash never leaves a half checkpoint under ``path``.
    """
    net = _bare(model)
    if not isinstance(net, UNetRes18):
        raise TypeError(f"save_parser expects a UNetRes18, got {type(net).__name__}")
    _check_meta(meta, "meta")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    obj = {"model": {k: v.detach().cpu() for k, v in net.state_dict().items()}, "feature_scale": net.feature_scale,
           "n_classes": net.n_classes, "in_channels": net.in_channels, "label_set": LABEL_SET, "format": _FORMAT,
           **meta}
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)
    return path


# ------------------------------------------------------------------------------------------- inference

def _batch_to(images: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    """A uint8 batch on ``device``: uint8 crosses the bus (4x less than float), pinned for async copies."""
    t = images if isinstance(images, torch.Tensor) else torch.from_numpy(np.array(images, dtype=np.uint8))
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def predict_masks(model: nn.Module, images: np.ndarray | torch.Tensor, batch_size: int = 64,
                  device: str | torch.device = "cpu", amp: bool = False) -> np.ndarray:
    """Argmax label maps ``uint8 [N,H,W]`` for uint8 RGB faces ``[N,H,W,3]`` (numpy, or a tensor on any device).

    Moves ``model`` to ``device`` in channels_last (cuDNN's and oneDNN's fast layout: measured 1.2-1.4x
    faster on CPU too) and runs it under inference_mode in batches; ``amp`` enables bf16 autocast
    (meant for CUDA; CPUs without bf16 units get slower).
    """
    device = torch.device(device)
    if images.ndim != 4:
        raise ValueError(f"predict_masks expects uint8 images [N,H,W,C], got shape {tuple(images.shape)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    model = model.to(device, memory_format=torch.channels_last).eval()
    out = np.empty(tuple(images.shape[:3]), dtype=np.uint8)
    with torch.inference_mode(), autocast(device, amp):
        for s in range(0, len(images), batch_size):
            x = to_input(_batch_to(images[s:s + batch_size], device), channels_last=True)
            out[s:s + len(x)] = model(x).argmax(1).to(torch.uint8).cpu().numpy()
    return out


def masks_from_checkpoint(parser_ckpt: str | os.PathLike, images: np.ndarray, device: str | torch.device = "cpu",
                          batch_size: int = 64) -> np.ndarray:
    """``predict_masks`` with the parser of a checkpoint file (loaded onto ``device``)."""
    return predict_masks(load_parser(parser_ckpt, map_location=device), images, batch_size=batch_size, device=device)


def forward_throughput(model: nn.Module, batch_size: int = 64, device: str | torch.device = "cpu",
                       amp: bool = False, iters: int = 5, warmup: int = 1, size: int = 112) -> float:
    """Images/s of the parser's forward + argmax alone on a random uint8 batch already on ``device``.

    The yardstick for ``fse cache build``: everything it adds (decode, encode, IO) should hide behind this.
    """
    device = torch.device(device)
    model = model.to(device, memory_format=torch.channels_last).eval()
    g = torch.Generator().manual_seed(0)
    batch = torch.randint(0, 256, (batch_size, size, size, model.in_channels), dtype=torch.uint8, generator=g).to(device)
    with torch.inference_mode(), autocast(device, amp):
        for i in range(warmup + iters):
            if i == warmup:
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                t0 = time.perf_counter()
            model(to_input(batch, channels_last=True)).argmax(1).to(torch.uint8)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    return batch_size * iters / (time.perf_counter() - t0)


# ----------------------------------------------------------------------------------- FaceSynthetics data

def read_anno_list(data_dir: str | os.PathLike) -> np.ndarray:
    """Sorted frame ids with 25-class labels (``with_25 == 1``) from ``anno_list.csv``."""
    path = Path(data_dir) / "anno_list.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: a FaceSynthetics folder with 25-class labels needs anno_list.csv")
    ids = []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        cols = [c.strip() for c in reader.fieldnames or []]
        if "frame_id" not in cols or "with_25" not in cols:
            raise ValueError(f"{path}: header must have columns frame_id,with_25, got {cols}")
        reader.fieldnames = cols
        for row_no, row in enumerate(reader, start=2):
            try:
                fid, w25 = int(row["frame_id"]), int(row["with_25"])
            except (TypeError, ValueError):
                raise ValueError(f"{path}: row {row_no}: frame_id/with_25 must be integers, got {row}") from None
            if w25 not in (0, 1) or fid < 0:
                raise ValueError(f"{path}: row {row_no}: bad values frame_id={fid} with_25={w25}")
            if w25:
                ids.append(fid)
    if not ids:
        raise ValueError(f"{path}: no frame has with_25 == 1")
    return np.unique(np.asarray(ids, dtype=np.int64))


def _frame_paths(root: Path, fid: int) -> tuple[Path, Path, Path]:
    """Image, landmarks, 25-class label of a frame (images flat as released, or under ``images/``)."""
    stem = f"{fid:06d}"
    image = root / f"{stem}.png"
    if not image.is_file() and (root / "images" / f"{stem}.png").is_file():
        image = root / "images" / f"{stem}.png"
    ldmks = image.parent / f"{stem}_ldmks.txt"
    return image, ldmks, root / "labels_25" / f"{stem}_seg.png"


def load_frame(data_dir: str | os.PathLike, frame_id: int, size: int = 112) -> tuple[np.ndarray, np.ndarray]:
    """One FaceSynthetics frame aligned to ArcFace ``size``: (RGB uint8 HxWx3 bilinear, labels uint8 HxW nearest)."""
    image_path, ldmk_path, label_path = _frame_paths(Path(data_dir), int(frame_id))
    img = cv2.imread(str(image_path), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f"{image_path}: missing or not a readable image")
    seg = cv2.imread(str(label_path), cv2.IMREAD_UNCHANGED)
    if seg is None:
        raise ValueError(f"{label_path}: missing or not a readable label image")
    if seg.ndim != 2 or seg.dtype != np.uint8 or seg.shape != img.shape[:2]:
        raise ValueError(f"{label_path}: expected a single-channel uint8 map of {img.shape[:2]}, "
                         f"got {seg.dtype} {seg.shape}")
    bad = np.unique(seg[(seg >= NUM_CLASSES) & (seg != IGNORE_INDEX)])
    if bad.size:
        raise ValueError(f"{label_path}: values {bad[:5].tolist()} are not 25-class ids (0..24) or {IGNORE_INDEX}")
    try:
        ldmks = np.loadtxt(ldmk_path, dtype=np.float64, ndmin=2)
        p5 = five_points_from_68(ldmks)
    except (OSError, ValueError) as e:
        raise ValueError(f"{ldmk_path}: {e}") from None
    return align_image(cv2.cvtColor(img, cv2.COLOR_BGR2RGB), p5, size), align_mask(seg, p5, size)


class AlignedSet(NamedTuple):
    images: np.ndarray  # uint8 [N,S,S,3] RGB, memory-mapped
    masks: np.ndarray  # uint8 [N,S,S]
    frame_ids: np.ndarray  # int64 [N], sorted
    path: Path


def _fingerprint(root: Path, ids: np.ndarray, size: int) -> str:
    """Hash of anno_list.csv and every frame's three file sizes and mtimes: any edit rebuilds the cache."""
    h = hashlib.sha1(f"{_FORMAT}:{size}".encode())
    h.update((root / "anno_list.csv").read_bytes())
    for fid in ids:
        for p in _frame_paths(root, int(fid)):
            st = p.stat() if p.exists() else None
            h.update(f"{p.name}:{st.st_size if st else -1}:{st.st_mtime_ns if st else -1};".encode())
    return h.hexdigest()[:16]


def _load_frame_job(job: tuple[str, int, int]) -> tuple[np.ndarray, np.ndarray]:
    return load_frame(*job)


def prepare_dataset(data_dir: str | os.PathLike, cache_dir: str | os.PathLike, size: int = 112,
                    workers: int = 0, progress: bool = True) -> AlignedSet:
    """Align every ``with_25`` frame once and memory-map the result on later calls.

    The cache is a folder of ``.npy`` files (not one ``.npz``) so DataLoader workers share pages
    through mmap instead of each holding the 4.4 GB that 88k faces take. Its name holds a
    fingerprint of the source files, so an edited folder gets a fresh cache.
    """
    from tqdm import tqdm

    root = Path(data_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"FaceSynthetics folder not found: {root}")
    ids = read_anno_list(root)
    cache = Path(cache_dir) / f"aligned{size}_{_fingerprint(root, ids, size)}"
    if not (cache / "meta.json").is_file():
        # written straight into .npy memmaps in a temporary folder, renamed when complete: a killed run
        # leaves no half cache, and 88k faces never need to fit in RAM at once
        tmp = cache.with_name(cache.name + f".tmp{os.getpid()}")
        tmp.mkdir(parents=True, exist_ok=True)
        images = np.lib.format.open_memmap(tmp / "images.npy", "w+", np.uint8, (len(ids), size, size, 3))
        masks = np.lib.format.open_memmap(tmp / "masks.npy", "w+", np.uint8, (len(ids), size, size))
        jobs = [(str(root), int(f), size) for f in ids]
        if workers > 0:
            import multiprocessing as mp
            pool = mp.get_context("spawn").Pool(workers)
            results = pool.imap(_load_frame_job, jobs, chunksize=16)
        else:
            pool, results = None, map(_load_frame_job, jobs)
        try:
            for i, (img, mask) in enumerate(tqdm(results, total=len(jobs), desc="align", disable=not progress)):
                images[i], masks[i] = img, mask
        finally:
            if pool is not None:
                pool.terminate()
        images.flush()
        masks.flush()
        del images, masks
        np.save(tmp / "frame_ids.npy", ids)
        (tmp / "meta.json").write_text(json.dumps({"source": str(root.resolve()), "size": size, "count": len(ids),
                                                   "label_set": LABEL_SET, "format": _FORMAT}))
        if cache.exists():  # another process finished first
            import shutil
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, cache)
    return AlignedSet(np.load(cache / "images.npy", mmap_mode="r"), np.load(cache / "masks.npy", mmap_mode="r"),
                      np.load(cache / "frame_ids.npy"), cache)


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic (train, held-out) index arrays: a seeded permutation of the sorted frames."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    n_val = 0 if val_fraction == 0 else min(n - 1, max(1, round(n * val_fraction)))
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


# --------------------------------------------------------------------------------------- augmentation

def affine_pair(img: np.ndarray, mask: np.ndarray, angle: float, scale: float, shift: tuple[float, float],
                fill: int = IGNORE_INDEX) -> tuple[np.ndarray, np.ndarray]:
    """Rotate/scale about the centre and shift; image bilinear, labels nearest, invented border = ``fill``."""
    h, w = mask.shape
    m = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), angle, scale)
    m[:, 2] += shift
    img = cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    mask = cv2.warpAffine(mask, m, (w, h), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=int(fill))
    return img, mask


def color_jitter(img: np.ndarray, brightness: float, contrast: float, saturation: float, hue: float) -> np.ndarray:
    """Photometric change by the given factors (torchvision's functional ops on uint8)."""
    t = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)
    t = TF.adjust_brightness(t, brightness)
    t = TF.adjust_contrast(t, contrast)
    t = TF.adjust_saturation(t, saturation)
    if hue:
        t = TF.adjust_hue(t, hue)
    return t.permute(1, 2, 0).contiguous().numpy()


class ParserAugment:
    """Training augmentation for (face, label map) pairs: flip, colour jitter, small affine.

    The affine jitter mimics landmark noise of real aligned faces; applied to 30% of samples because
    more slowed short CPU training (mean F1 0.846 vs 0.829 with 70%, feature_scale 8, 300 s).
    Randomness comes from the ``rng`` passed per call (seeded by the dataset from seed, epoch and
    index), so runs repeat exactly whatever the number of DataLoader workers or ranks.
    """

    def __init__(self, flip: float = 0.5, degrees: float = 10.0, scale: tuple[float, float] = (0.9, 1.1),
                 translate: float = 0.06, brightness: float = 0.3, contrast: float = 0.3, saturation: float = 0.3,
                 hue: float = 0.03, p_affine: float = 0.3) -> None:
        self.flip, self.degrees, self.scale, self.translate = flip, degrees, scale, translate
        self.brightness, self.contrast, self.saturation, self.hue = brightness, contrast, saturation, hue
        self.p_affine = p_affine

    def __call__(self, img: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        if rng.random() < self.flip:
            img, mask = flip_pair(img, mask)
        if rng.random() < self.p_affine:
            h, w = mask.shape
            shift = tuple(rng.uniform(-self.translate, self.translate) * s for s in (w, h))
            img, mask = affine_pair(img, mask, rng.uniform(-self.degrees, self.degrees), rng.uniform(*self.scale), shift)
        f = [rng.uniform(1 - a, 1 + a) for a in (self.brightness, self.contrast, self.saturation)]
        img = color_jitter(img, *f, hue=rng.uniform(-self.hue, self.hue))
        return img, mask

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(flip={self.flip}, degrees={self.degrees}, scale={self.scale}, "
                f"translate={self.translate}, brightness={self.brightness}, contrast={self.contrast}, "
                f"saturation={self.saturation}, hue={self.hue}, p_affine={self.p_affine})")


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


def class_weights(masks: np.ndarray, n_classes: int = NUM_CLASSES, power: float = 0.5) -> torch.Tensor:
    """Cross-entropy weights ``(pixels / class pixels) ** power``, mean 1 over the classes present.

    Why: eyes, brows and lips cover ~0.3% of an aligned face each; plain cross-entropy learns them
    hundreds of steps after skin and hair, while mean F1 counts every class equally. With power 0.5, a
    feature_scale-8 parser overfitting one batch for 150 steps reached mean F1 0.73 instead of 0.37
    (power 1 starves the background). ``power=0`` gives plain cross-entropy.
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


# ------------------------------------------------------------------------------------------- metrics

def confusion_matrix(pred: np.ndarray, target: np.ndarray, n_classes: int = NUM_CLASSES,
                     ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """``C[t, p]`` pixel counts (rows ground truth); ``ignore_index`` pixels skipped.

    np.bincount rather than sklearn.metrics.confusion_matrix: the latter is ~50x slower on the
    millions of pixels of a held-out set; the tests check both agree.
    """
    pred, target = np.asarray(pred).ravel(), np.asarray(target).ravel()
    if pred.shape != target.shape:
        raise ValueError(f"prediction and ground truth differ in size: {pred.size} vs {target.size}")
    keep = target != ignore_index
    pred, target = pred[keep].astype(np.int64), target[keep].astype(np.int64)
    if target.size and (target.max() >= n_classes or pred.max() >= n_classes or min(target.min(), pred.min()) < 0):
        raise ValueError(f"labels outside 0..{n_classes - 1} (besides ignore {ignore_index})")
    return np.bincount(target * n_classes + pred, minlength=n_classes ** 2).reshape(n_classes, n_classes)


class ParserMetrics(NamedTuple):
    """Per-class F1 (= Dice) and IoU; means over the classes present in the ground truth."""
    confusion: np.ndarray
    f1: np.ndarray
    iou: np.ndarray
    present: np.ndarray
    mean_f1: float
    mean_iou: float

    @classmethod
    def from_confusion(cls, conf: np.ndarray) -> "ParserMetrics":
        conf = np.asarray(conf, dtype=np.int64)
        tp = np.diag(conf).astype(np.float64)
        fp, fn = conf.sum(0) - tp, conf.sum(1) - tp
        present = conf.sum(1) > 0
        with np.errstate(invalid="ignore", divide="ignore"):
            f1 = np.where(tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), np.nan)
            iou = np.where(tp + fp + fn > 0, tp / (tp + fp + fn), np.nan)
        mean = (lambda a: float(a[present].mean()) if present.any() else float("nan"))
        return cls(conf, f1, iou, present, mean(f1), mean(iou))

    def rows(self) -> list[dict[str, Any]]:
        gt, pr = self.confusion.sum(1), self.confusion.sum(0)
        return [{"class_id": k, "class": CLASSES[k] if k < len(CLASSES) else str(k), "gt_pixels": int(gt[k]),
                 "pred_pixels": int(pr[k]), "present": bool(self.present[k]), "f1": float(self.f1[k]),
                 "iou": float(self.iou[k])} for k in range(len(self.f1))]

    def table(self) -> str:
        lines = [f"{'id':>3} {'class':<17} {'gt px':>10} {'F1':>7} {'IoU':>7}"]
        for r in self.rows():
            mark = "" if r["present"] else "  (absent)"
            lines.append(f"{r['class_id']:>3} {r['class']:<17} {r['gt_pixels']:>10} {r['f1']:>7.4f} {r['iou']:>7.4f}{mark}")
        lines.append(f"mean over {int(self.present.sum())} present classes: F1 {self.mean_f1:.4f}  IoU {self.mean_iou:.4f}")
        return "\n".join(lines)

    def write_csv(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = self.rows()
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
            w.writerow({"class_id": "", "class": "mean_present", "gt_pixels": int(self.confusion.sum()),
                        "pred_pixels": int(self.confusion.sum()), "present": int(self.present.sum()),
                        "f1": self.mean_f1, "iou": self.mean_iou})
        return path


def evaluate_parser(model: nn.Module, images: np.ndarray, masks: np.ndarray, batch_size: int = 64,
                    device: str | torch.device = "cpu", amp: bool = False, chunk: int = 1024) -> ParserMetrics:
    """Metrics of ``model`` on aligned faces and their ground-truth maps (streamed in chunks)."""
    if len(images) != len(masks):
        raise ValueError(f"{len(images)} images but {len(masks)} masks")
    conf = np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64)
    for s in range(0, len(images), chunk):
        pred = predict_masks(model, images[s:s + chunk], batch_size, device, amp)
        conf += confusion_matrix(pred, masks[s:s + chunk], n_classes=NUM_CLASSES)
    return ParserMetrics.from_confusion(conf)


# ------------------------------------------------------------------------------------------- training

def train_parser(data: str | os.PathLike, out: str | os.PathLike, *, epochs: int = 30, batch_size: int = 32,
                 lr: float = 5e-3, weight_decay: float = 1e-4, feature_scale: int = DEFAULT_FEATURE_SCALE,
                 val_fraction: float = 0.1, seed: int = 0, workers: int = 2, device: str = "auto",
                 amp: bool = True, time_budget: float | None = None, class_weight_power: float = 0.5,
                 augment: ParserAugment | None = None, resume: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None,
                 warmup_steps: int = 50, log_every: int = 10, progress: bool = True) -> dict[str, Any]:
    """Train a parser on a FaceSynthetics-layout folder; writes ``last.pt`` each epoch and ``best.pt`` (val mIoU).

    The loss is cross-entropy weighted by :func:`class_weights` (``class_weight_power``); ``augment``
    defaults to ``ParserAugment()``.
    ``time_budget`` (seconds of training incl. validation, excluding the one-off alignment) stops
    the run and anneals the learning rate to zero exactly when it runs out. ``resume`` (a path, or
    ``'auto'`` for ``out/last.pt``) continues from the saved epoch with the saved optimizer, split and
    elapsed time. Under torchrun each rank trains on a DistributedSampler shard; rank 0 writes.
    Returns a summary dict (epochs done, steps, elapsed seconds, this process's CPU seconds, which
    shows how much of the wall-clock a shared machine really gave, best/last val scores, paths).
    """
    from torch.nn.parallel import DistributedDataParallel
    from torch.utils.data import DataLoader
    from torch.utils.data.distributed import DistributedSampler
    from tqdm import tqdm

    out = Path(out)
    rank, world, dev = dist_env(resolve_device(device))
    amp = bool(amp) and dev.type == "cuda"
    state = None
    if resume is not None:
        resume = out / "last.pt" if str(resume) == "auto" else Path(resume)
        if not resume.is_file():
            raise FileNotFoundError(f"--resume: checkpoint not found: {resume}")
        state = torch.load(resume, map_location="cpu", weights_only=True)
        if "optimizer" not in state or "epoch" not in state:
            raise ParserCheckpointError(f"{resume}: not a training checkpoint (no optimizer/epoch); cannot resume")
        feature_scale, seed, val_fraction = int(state["feature_scale"]), int(state["seed"]), float(state["val_fraction"])

    cache_dir = Path(cache_dir) if cache_dir is not None else out / "cache"
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        aligned = prepare_dataset(data, cache_dir, workers=workers, progress=progress)
    if world > 1:
        torch.distributed.barrier()
    if rank != 0:
        aligned = prepare_dataset(data, cache_dir, progress=False)
    train_idx, val_idx = split_indices(len(aligned.frame_ids), val_fraction, seed)

    torch.manual_seed(seed)
    model = UNetRes18(feature_scale=feature_scale)
    if state is not None:
        model.load_state_dict(state["model"])
    # channels_last: cuDNN's fast layout. Not for CPU training: ~8% at best there, and torch 2.14's
    # CPU backward crashes (SIGSEGV) in channels_last at feature_scale 16
    fmt = torch.channels_last if dev.type == "cuda" else torch.contiguous_format
    model = model.to(dev, memory_format=fmt)
    net = DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None) if world > 1 else model
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    if state is not None:
        opt.load_state_dict(state["optimizer"])

    train_ds = ParsingDataset(aligned.images, aligned.masks, train_idx, augment or ParserAugment(), seed)
    sampler = DistributedSampler(train_ds, num_replicas=world, rank=rank, shuffle=True, seed=seed,
                                 drop_last=len(train_ds) >= 2 * batch_size * world)
    loader = DataLoader(train_ds, batch_size=batch_size, sampler=sampler, num_workers=workers,
                        pin_memory=dev.type == "cuda", drop_last=len(train_ds) >= 2 * batch_size * world,
                        persistent_workers=False)
    if len(loader) == 0:
        raise ValueError(f"{data}: {len(train_ds)} training faces give no batch of {batch_size} on {world} rank(s)")
    total_steps = max(1, epochs * len(loader))
    weight = class_weights(aligned.masks[train_idx[::max(1, len(train_idx) // 4096)]], power=class_weight_power)
    loss_fn = nn.CrossEntropyLoss(weight=weight.to(dev), ignore_index=IGNORE_INDEX)

    start_epoch = int(state["epoch"]) if state else 0
    step = int(state["step"]) if state else 0
    elapsed0 = float(state["elapsed"]) if state else 0.0
    best = float(state["best_val_miou"]) if state else -1.0
    writer = None
    if rank == 0:
        from torch.utils.tensorboard import SummaryWriter
        writer = SummaryWriter(str(out / "tb"))
    meta = {"seed": seed, "val_fraction": val_fraction, "time_budget": time_budget, "lr": lr,
            "class_weights": weight.tolist(),
            "batch_size": batch_size, "world_size": world, "data": str(Path(data).resolve())}
    t_start, cpu_start, val_cost, last_val, last_loss = time.perf_counter(), time.process_time(), 0.0, {}, float("nan")
    epoch = start_epoch

    def rank_max(value: float) -> float:
        """The same number on every rank: ranks must agree on when the budget ends, or collectives hang."""
        if world == 1:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=dev)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return float(t.item())

    def elapsed() -> float:
        return rank_max(elapsed0 + time.perf_counter() - t_start)

    def budget_left(now: float) -> bool:  # leave room for one more validation + checkpoint (x1.5: noisy machines)
        return time_budget is None or now + 1.5 * val_cost < time_budget

    stop = start_epoch >= epochs or not budget_left(elapsed0)
    while not stop:
        sampler.set_epoch(epoch)
        train_ds.set_epoch(epoch)
        net.train()
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{epochs}", disable=rank != 0 or not progress, leave=False)
        for images, masks in bar:
            now = elapsed()
            if not budget_left(now):
                stop = True
                break
            progress_frac = max(step / total_steps, now / time_budget if time_budget else 0.0)
            cur_lr = warmup_cosine(progress_frac, step, lr, warmup_steps)
            for g in opt.param_groups:
                g["lr"] = cur_lr
            x = to_input(images.to(dev, non_blocking=True), channels_last=fmt == torch.channels_last)
            y = masks.to(dev, non_blocking=True)
            with autocast(dev, amp):
                loss = loss_fn(net(x).float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            if step % log_every == 0 or step == 1:
                lv = loss.detach()
                if world > 1:  # the mean over ranks, not rank 0's shard alone
                    torch.distributed.all_reduce(lv)
                    lv = lv / world
                last_loss = float(lv)
                if writer is not None:
                    writer.add_scalar("train/loss", last_loss, step)
                    writer.add_scalar("train/lr", cur_lr, step)
                bar.set_postfix(loss=f"{last_loss:.4f}", lr=f"{cur_lr:.2e}")
        bar.close()
        epoch += 1
        stop = stop or epoch >= epochs
        t_val = time.perf_counter()
        if rank == 0:
            if len(val_idx):
                m = evaluate_parser(model, aligned.images[val_idx], aligned.masks[val_idx], batch_size=64,
                                    device=dev, amp=amp)
                last_val = {"val_miou": m.mean_iou, "val_mf1": m.mean_f1}
                writer.add_scalar("val/mIoU", m.mean_iou, step)
                writer.add_scalar("val/mF1", m.mean_f1, step)
            score = last_val.get("val_miou", -1.0)
            is_best = score > best or not len(val_idx)  # without a held-out split the newest is "best"
            best = max(best, score)
            ckpt_meta = {**meta, **last_val, "epoch": epoch, "step": step, "best_val_miou": best}
            if is_best:
                save_parser(model, out / "best.pt", **ckpt_meta)
            save_parser(model, out / "last.pt", optimizer=opt.state_dict(),
                        elapsed=elapsed0 + time.perf_counter() - t_start, **ckpt_meta)
            scores = "  ".join(f"{k} {v:.4f}" for k, v in last_val.items())  # one line per epoch, bars or not
            print(f"epoch {epoch}/{epochs} step {step} loss {last_loss:.4f} {scores}"
                  f"  elapsed {elapsed0 + time.perf_counter() - t_start:.0f}s"
                  f" (cpu {time.process_time() - cpu_start:.0f}s this run)", flush=True)
        if world > 1:
            torch.distributed.barrier()
        val_cost = rank_max(time.perf_counter() - t_val)
        model.to(memory_format=fmt).train()  # predict_masks switched it to channels_last
        stop = stop or not budget_left(elapsed())
    if writer is not None:
        writer.close()
    if world > 1:
        torch.distributed.destroy_process_group()
    return {"epochs": epoch, "steps": step, "elapsed": elapsed0 + time.perf_counter() - t_start,
            "cpu_seconds": time.process_time() - cpu_start,
            "best_val_miou": best, **last_val, "last": str(out / "last.pt"), "best": str(out / "best.pt"),
            "cache": str(aligned.path), "n_train": len(train_idx), "n_val": len(val_idx)}


def evaluate_checkpoint(data: str | os.PathLike, parser_ckpt: str | os.PathLike, split: str = "val",
                        val_fraction: float | None = None, seed: int | None = None, batch_size: int = 64,
                        device: str = "auto", amp: bool = False, cache_dir: str | os.PathLike | None = None,
                        workers: int = 0) -> tuple[ParserMetrics, dict[str, Any]]:
    """Metrics of a checkpoint on the ``'val'`` (held-out), ``'train'`` or ``'all'`` frames of a folder.

    The split's seed and fraction come from the checkpoint (as training saved them) unless given, so
    the held-out faces are the ones training never saw. The aligned-face cache defaults to
    ``cache/`` beside the checkpoint, where ``train_parser`` put it.
    """
    ckpt = Path(parser_ckpt)
    model = load_parser(ckpt)
    meta = torch.load(ckpt, map_location="cpu", weights_only=True)
    meta = meta if isinstance(meta, Mapping) else {}
    fraction = float(meta.get("val_fraction", 0.1)) if val_fraction is None else float(val_fraction)
    seed = int(meta.get("seed", 0)) if seed is None else int(seed)
    aligned = prepare_dataset(data, cache_dir if cache_dir is not None else ckpt.parent / "cache", workers=workers)
    train_idx, val_idx = split_indices(len(aligned.frame_ids), fraction, seed)
    splits = {"val": val_idx, "train": train_idx, "all": np.arange(len(aligned.frame_ids))}
    if split not in splits:
        raise ValueError(f"split must be one of {sorted(splits)}, got {split!r}")
    idx = splits[split]
    if not len(idx):
        raise ValueError(f"{data}: the {split!r} split is empty (val_fraction {fraction})")
    metrics = evaluate_parser(model, aligned.images[idx], aligned.masks[idx], batch_size, resolve_device(device), amp)
    return metrics, {"n": len(idx), "val_fraction": fraction, "seed": seed, "frame_ids": aligned.frame_ids[idx]}
