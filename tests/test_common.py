"""The shared helper layer: normalisation, device/precision, LR schedule, mask files."""
import numpy as np
import pytest
import torch

from fse_plugin.common import (FSEError, NORM_LUT, load_masks, masks_path_for, model_device,
                               resolve_device, resolve_precision, to_input, to_uint8, warmup_cosine)


def test_to_input_is_arcface_torchs_normalisation():
    img = np.random.default_rng(0).integers(0, 256, (2, 5, 6, 3), dtype=np.uint8)
    x = to_input(img)
    # torchvision's ToTensor + Normalize(0.5, 0.5), as upstream's MXFaceDataset and verification.py
    # run it
    want = torch.stack([(torch.from_numpy(i).permute(2, 0, 1).float() / 255 - 0.5) / 0.5
                        for i in img])
    assert torch.equal(x, want) and x.is_contiguous() and x.dtype == torch.float32
    nhwc = to_input(img, channels_last=True)
    assert torch.equal(nhwc, x) and nhwc.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(to_input(img[0]), x[0])
    np.testing.assert_array_equal(NORM_LUT[0, img[0, ..., 0]], x[0, 0].numpy())
    with pytest.raises(ValueError, match="uint8"):
        to_input(img.astype(np.float32))


def test_to_uint8_inverts_and_clips():
    img = np.random.default_rng(1).integers(0, 256, (3, 4, 4, 3), dtype=np.uint8)
    np.testing.assert_array_equal(to_uint8(to_input(img)), img)
    np.testing.assert_array_equal(to_uint8(to_input(img[0])), img[0])
    assert to_uint8(torch.full((3, 1, 1), 5.0)).tolist() == [[[255, 255, 255]]]


def test_devices_and_precision():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert (model_device(torch.nn.Linear(2, 2)) == torch.device("cpu")
            and model_device(torch.nn.ReLU()).type == "cpu")
    assert (resolve_precision("auto", "cpu") == "fp32"
            and resolve_precision("auto", "cuda:0") == "bf16")
    assert resolve_precision("fp16", "cpu") == "fp16"
    with pytest.raises(FSEError, match="fp8"):
        resolve_precision("fp8", "cpu")


def test_warmup_cosine():
    assert warmup_cosine(0.0, 0, 1.0, 10) == pytest.approx(0.1)
    assert warmup_cosine(0.5, 100, 1.0, 10) == pytest.approx(0.5)
    assert (warmup_cosine(1.0, 100, 1.0, 10) == pytest.approx(0.0)
            and warmup_cosine(2.0, 100, 1.0, 0) == 0.0)


def test_mask_files(tmp_path):
    pack = tmp_path / "lfw.bin"
    assert masks_path_for(pack) == tmp_path / "lfw.masks.npy"
    assert masks_path_for(tmp_path / "pairs") == tmp_path / "pairs.masks.npy"
    masks = np.zeros((4, 8, 8), np.uint8)
    np.save(masks_path_for(pack), masks)
    loaded = load_masks(masks_path_for(pack), 4, (8, 8))
    assert isinstance(loaded, np.memmap) and loaded.shape == (4, 8, 8)
    with pytest.raises(FSEError, match=r"lfw.masks.npy: masks are uint8 \(4, 8, 8\), "
                                       r"expected uint8 \(5, 8, 8\)"):
        load_masks(masks_path_for(pack), 5, (8, 8))
    np.save(tmp_path / "wide.npy", masks.astype(np.int64))
    with pytest.raises(FSEError, match="int64"):
        load_masks(tmp_path / "wide.npy", 4, (8, 8))
    with pytest.raises(FSEError, match="not found"):
        load_masks(tmp_path / "none.npy", 4, (8, 8))
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(FSEError, match="not a .npy mask array"):
        load_masks(tmp_path / "obj.npy", 1, (8, 8))
