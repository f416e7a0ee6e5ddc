"""FSErasing: draw distributions, p, fill modes, locality, flips, determinism, batches, both
engines."""
import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from erasing_golden import mask_runs as _runs
from fse_plugin import synth
from fse_plugin.common import FSEError
from fse_plugin.erasing import FILLS, FSErasing, MaskRuns, erase, flip_pair
from fse_plugin.labels import MIRROR, NUM_CLASSES, class_id, flip_mask


@pytest.fixture(scope="module")
def faces():
    """Six synthetic aligned faces: (normalised images [6,3,112,112], masks uint8 [6,112,112])."""
    ids = synth.make_identities(3, seed=5)
    rng = np.random.default_rng(0)
    pairs = [synth.render_aligned(ids[i % 3], rng) for i in range(6)]
    imgs = torch.stack([torch.from_numpy(im).permute(2, 0, 1).float() / 127.5 - 1
                        for im, _ in pairs])
    return imgs, torch.from_numpy(np.stack([m for _, m in pairs]))


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def drawn(selected: torch.Tensor) -> list[list[int]]:
    """Class ids of each row of a selection."""
    return [row.nonzero().squeeze(1).tolist() for row in selected]


def test_class_draws_uniform_over_all_25():
    sel = FSErasing().get_params(torch.zeros(5000, 4, 4, dtype=torch.uint8), gen(1))
    assert sel.shape == (5000, NUM_CLASSES) and (sel.sum(1) == 1).all()
    counts = sel.sum(0).numpy()
    assert counts.min() > 0 and chisquare(counts).pvalue > 1e-3


def test_range_and_without_replacement_and_subset():
    t = FSErasing(n_erase=(1, 3), classes=["nose", "mouth", "left_eye", "right_eye", 0])
    draws = drawn(t.get_params([np.zeros((2, 2), np.uint8)] * 3000, gen(2)))
    sizes = np.bincount([len(d) for d in draws], minlength=4)
    # 1, 2, 3 equally likely (inclusive)
    assert sizes[0] == 0 and chisquare(sizes[1:]).pvalue > 1e-3
    allowed = {class_id(c) for c in ["nose", "mouth", "left_eye", "right_eye"]} | {0}
    flat = [c for d in draws for c in d]
    assert set(flat) == allowed
    assert chisquare(np.bincount(flat)[sorted(allowed)]).pvalue > 1e-3


def test_present_only_and_fixed(faces):
    _, masks = faces
    t = FSErasing(n_erase=2, present_only=True)
    for _ in range(20):
        for m, d in zip(masks, drawn(t.get_params(masks, gen(3)))):
            assert len(d) == 2 and set(d) <= set(torch.unique(m).tolist())
    few = torch.zeros(1, 8, 8, dtype=torch.uint8)
    few[0, :2] = class_id("nose")
    assert (drawn(FSErasing(n_erase=3, present_only=True).get_params(few, gen(3)))
            == [[0, class_id("nose")]])
    fixed = FSErasing(n_erase=["left_eye", "right_eye"])
    assert drawn(fixed.get_params(masks, gen(3))) == [[11, 12]] * len(masks)
    assert fixed.fixed == [12, 11]


def test_p_respected():
    # small: many draws, quickly
    img, mask = torch.zeros(3, 4, 4), torch.zeros(4, 4, dtype=torch.uint8)
    g = gen(4)
    t = FSErasing(p=0.3, fill=1.0)
    changed = sum(bool(t(img, mask, g).any()) for _ in range(3000)) / 3000
    # background drawn 1/25
    assert abs(changed - 0.3 / NUM_CLASSES) < 4 * (0.012 * 0.988 / 3000) ** 0.5
    t = FSErasing(p=0.3, classes=["background"], fill=1.0)
    changed = sum(bool(t(img, mask, g).any()) for _ in range(3000)) / 3000
    assert abs(changed - 0.3) < 4 * (0.3 * 0.7 / 3000) ** 0.5
    assert not any(FSErasing(p=0.0)(img, mask, g).any() for _ in range(50))


@pytest.mark.parametrize("fill", FILLS + (0.25,))
def test_each_fill_changes_only_its_regions(faces, fill):
    imgs, masks = faces
    img, mask = imgs[0], masks[0]
    ids = [class_id("background"), class_id("hair")]
    before = img.clone()
    out = erase(img, mask, ids, fill, gen(5))
    assert torch.equal(img, before), "erase must not modify its input"
    region = (mask == ids[0]) | (mask == ids[1])
    assert region.sum() > 500
    assert torch.equal(out[:, ~region], img[:, ~region])
    assert not torch.equal(out[:, region], img[:, region])
    for c in ids:
        r = out[:, mask == c]
        if fill == "random":
            assert abs(float(r.mean())) < 0.1 and abs(float(r.std()) - 1) < 0.1
        elif fill == "random_1":
            assert torch.equal(r, r[:, :1].expand_as(r))
        elif fill == "region_mean":
            assert torch.allclose(r, img[:, mask == c].mean(1, keepdim=True).expand_as(r),
                                  atol=1e-5)
        elif fill == "image_mean":
            assert torch.allclose(r, img.mean((1, 2)).unsqueeze(1).expand_as(r), atol=1e-5)
        elif fill == 0.25:
            assert torch.all(r == 0.25)
    if fill == "random_1":  # one colour per region, not one for all
        assert not torch.equal(out[:, mask == ids[0]][:, 0], out[:, mask == ids[1]][:, 0])


def test_random_mix_is_half_and_half():
    img, mask = torch.zeros(3, 4, 4), torch.zeros(4, 4, dtype=torch.uint8)
    g = gen(6)
    one_colour = 0
    for _ in range(1000):
        r = erase(img, mask, [0], "random_mix", g)[0]
        one_colour += bool(torch.all(r == r[0, 0]))
    assert abs(one_colour / 1000 - 0.5) < 0.06


def test_absent_class_and_bad_arguments(faces):
    img, mask = faces[0][0], faces[1][0]
    absent = next(c for c in range(NUM_CLASSES) if not (mask == c).any())
    assert torch.equal(erase(img, mask, [absent], "random", gen()), img)
    assert torch.equal(erase(img, mask, [], "random", gen()), img)
    with pytest.raises(FSEError, match="fill: unknown fill 'blur'"):
        erase(img, mask, [0], "blur")
    with pytest.raises(FSEError, match="mask shape"):
        erase(img, mask[:10], [0])
    with pytest.raises(FSEError, match=r"FSErasing\.p: must be >= 0 and <= 1"):
        FSErasing(p=1.5)
    with pytest.raises(FSEError, match="unknown face class 'nostril'"):
        FSErasing(classes=["nose", "nostril"])
    with pytest.raises(FSEError, match="exceeds"):
        FSErasing(n_erase=3, classes=["nose", "mouth"])
    with pytest.raises(FSEError, match="lo <= hi"):
        FSErasing(n_erase=(3, 1))
    with pytest.raises(FSEError, match="drop one of them"):
        FSErasing(n_erase=["nose"], classes=["mouth"])
    with pytest.raises(FSEError, match=r"FSErasing\.n_erase: '2' is a string.*n_erase=2"):
        FSErasing(n_erase="2")  # not 'always erase class 2'
    assert FSErasing(n_erase="left_eye, right_eye").fixed == [12, 11]
    with pytest.raises(FSEError, match=r"FSErasing\.classes: must be a list"):
        FSErasing(classes=5)


def test_determinism_by_generator(faces):
    img, mask = faces[0][0], faces[1][0]
    t = FSErasing(n_erase=(1, 4), fill="random_mix")
    a = [t(img, mask, gen(7)) for _ in range(2)]
    assert torch.equal(a[0], a[1])
    outs = {t(img, mask, gen(s)).sum().item() for s in range(8)}
    assert len(outs) > 4
    torch.manual_seed(11)
    x = t(img, mask)
    torch.manual_seed(11)
    assert torch.equal(x, t(img, mask))  # no generator: torch's default one (seeded per worker)


def test_flip_pair_swaps_left_right(faces):
    imgs, masks = faces
    img, mask = imgs[0], masks[0]
    W = mask.shape[1]
    re, le = class_id("right_eye"), class_id("left_eye")
    # right_eye (the image's side) on the image-right
    assert (mask == re).nonzero()[:, 1].float().mean() > W / 2
    fimg, fmask = flip_pair(img, mask)
    assert torch.equal(fimg, img.flip(-1))
    assert torch.equal(fmask, torch.from_numpy(MIRROR)[mask.long()].flip(-1).to(mask.dtype))
    assert (fmask == re).nonzero()[:, 1].float().mean() > W / 2  # still the image-right eye
    assert torch.equal((fmask == re), (mask == le).flip(-1))
    # numpy HWC path (the dataset's) agrees with the tensor path
    nimg, nmask = flip_pair(img.permute(1, 2, 0).numpy(), mask.numpy())
    assert (np.array_equal(nimg, fimg.permute(1, 2, 0).numpy())
            and np.array_equal(nmask, fmask.numpy()))
    assert np.array_equal(flip_pair(img.numpy().transpose(1, 2, 0),
                                    mask.numpy().astype(np.int64))[1],
                          fmask.numpy().astype(np.int64))
    # batched tensors and ids >= 25 (ignore) kept
    bm = masks.clone()
    bm[:, 0, 0] = 255
    fb = flip_pair(imgs, bm)[1]
    assert fb.shape == bm.shape and torch.all(fb[:, 0, -1] == 255)


def test_repr():
    assert repr(FSErasing()) == ("FSErasing(p=1.0, n_erase=1, classes=all 25, present_only=False, "
                                 "fill='random')")
    assert repr(FSErasing(p=0.5, n_erase=(1, 2), classes="nose,mouth", fill=0.0)) == (
        "FSErasing(p=0.5, n_erase=(1, 2), classes=['nose', 'mouth'], present_only=False, fill=0.0)")
    assert "n_erase=['left_eye']" in repr(FSErasing(n_erase=["left_eye"]))


def test_batch_draws_and_p():
    g = gen(9)
    t = FSErasing(n_erase=(0, 3), classes=list(range(1, NUM_CLASSES)), p=0.8, fill=2.0)
    # classes 0..3, one pixel each
    masks = torch.arange(4).view(1, 2, 2).expand(4000, 2, 2).to(torch.uint8)
    out = t(torch.zeros(4000, 3, 2, 2), masks, g)
    erased = (out == 2.0).all(1).flatten(1)
    assert not erased[:, 0].any()  # class 0 is not among the classes to draw from
    n = t.get_params(masks, g).sum(1)
    assert chisquare(np.bincount(n.numpy(), minlength=4)).pvalue > 1e-3  # 0..3 equally likely
    share = float(erased.any(1).float().mean())  # erased: p, and at least one of classes 1..3 drawn
    hit = 1 - np.mean([np.prod([(24 - j - 3) / (24 - j) for j in range(k)]) for k in range(4)])
    assert abs(share - 0.8 * hit) < 0.03
    present = torch.zeros(500, 4, 4, dtype=torch.uint8)
    present[:, 0] = 7
    present[:, 1] = 255  # not a class: never drawn
    sel = FSErasing(n_erase=3, present_only=True).get_params(present, g)
    assert torch.equal(sel.nonzero()[:, 1].unique(), torch.tensor([0, 7]))
    fixed = FSErasing(n_erase=["nose"]).get_params(masks[:5], g)
    assert torch.equal(fixed.nonzero()[:, 1], torch.full((5,), class_id("nose")))


@pytest.mark.parametrize("fill", FILLS + (-0.5,))
def test_batch_erase_changes_only_selected_regions(faces, fill):
    imgs, masks = faces
    sel = torch.zeros(len(imgs), NUM_CLASSES, dtype=torch.bool)
    sel[0, 0] = sel[1, class_id("hair")] = sel[2, [0, 10]] = True  # samples 3..5: nothing
    out = erase(imgs, masks, sel, fill, gen(10))
    region = sel.gather(1, masks.view(len(imgs), -1).long()).view(masks.shape)
    assert torch.equal(out.permute(1, 0, 2, 3)[:, ~region], imgs.permute(1, 0, 2, 3)[:, ~region])
    assert torch.equal(out[3:], imgs[3:])
    if fill in ("region_mean", "image_mean", -0.5):
        # deterministic fills equal the single-image core
        for b in range(3):
            ids = sel[b].nonzero().squeeze(1).tolist()
            assert torch.allclose(out[b], erase(imgs[b], masks[b], ids, fill), atol=1e-5)
    else:
        assert not torch.equal(out[:3], imgs[:3])
    if fill == "random_1":
        r = out[2][:, masks[2] == 10]
        assert torch.equal(r, r[:, :1].expand_as(r))


def test_fsErasing_batch_end_to_end(faces):
    imgs, masks = faces
    t = FSErasing(p=1.0, n_erase=2, present_only=True, fill=3.0)
    out = t(imgs, masks, gen(12))
    erased = (out == 3.0).all(1)
    for b in range(len(imgs)):
        ids = masks[b][erased[b]].unique()
        assert len(ids) == 2 and torch.equal(erased[b], torch.isin(masks[b], ids))
    assert torch.equal(FSErasing(p=0.0)(imgs, masks, gen(12)), imgs)
    img = imgs[0]
    assert FSErasing(p=0.0)(img, masks[0], gen(12)) is img  # not drawn: the image itself


def test_autograd_images_take_the_torch_engine(faces):
    imgs, masks = faces
    img = imgs[0].clone().requires_grad_(True)
    out = erase(img, masks[0], [0, class_id("hair")], "region_mean")
    assert torch.allclose(out, erase(imgs[0], masks[0], [0, class_id("hair")], "region_mean"),
                          atol=1e-5)
    out.sum().backward()  # gradients flow to the pixels that were kept
    kept = ~((masks[0] == 0) | (masks[0] == class_id("hair")))
    assert torch.all(img.grad[:, kept] == 1)


@pytest.mark.parametrize("fill, mixed_share", [("random_mix", 0.5), ("random_mix_sample", 0.0)])
def test_random_mix_tosses_per_region(faces, fill, mixed_share):
    """The reference's coin is per erased region: a two-region sample mixes noise and a flat colour
    half of the time; 'random_mix_sample' keeps one coin per sample (never mixed)."""
    imgs, masks = faces
    ids = [class_id("background"), class_id("hair")]
    g, mixed, n = gen(13), 0, 400
    for _ in range(n):
        out = erase(imgs[0], masks[0], ids, fill, g)
        flat = [bool(torch.all(r == r[:, :1])) for r in (out[:, masks[0] == c] for c in ids)]
        mixed += flat[0] != flat[1]
    assert abs(mixed / n - mixed_share) < 0.08
    sel = torch.zeros(len(imgs), NUM_CLASSES, dtype=torch.bool)
    sel[:, ids] = True
    # the batched form tosses alike
    outs = [erase(imgs, masks, sel, fill, gen(s)) for s in range(60)]
    flat = torch.stack([torch.stack([(o[b][:, masks[b] == c] == o[b][:, masks[b] == c][:, :1]).all()
                                     for b in range(len(imgs)) for c in ids])
                        for o in outs]).view(-1, 2)
    assert abs(float((flat[:, 0] != flat[:, 1]).float().mean()) - mixed_share) < 0.1


@pytest.mark.parametrize("fill", FILLS + (0.5,))
def test_forms_agree(faces, fill):
    """In place on a list of samples (the dataset's call), on a copy, one image at a time and on the
    torch engine (autograd): the same pixels, and the same values for one seed (the mean fills to
    rounding)."""
    imgs, masks = faces
    sel = torch.zeros(len(imgs), NUM_CLASSES, dtype=torch.bool)
    sel[0, 0] = sel[1, class_id("hair")] = sel[2, [0, 10, 21]] = True
    rows = list(imgs.clone())
    assert erase(rows, masks.numpy(), sel.numpy(), fill, gen(14), inplace=True) is rows
    copy = erase(imgs, masks, sel, fill, gen(14))
    torch_engine = erase(imgs.clone().requires_grad_(True), masks, sel, fill, gen(14)).detach()
    assert torch.equal(torch.stack(rows), copy)
    assert torch.allclose(torch_engine, copy, atol=1e-6)
    region = sel.gather(1, masks.view(len(imgs), -1).long()).view(masks.shape)
    assert (torch.equal((copy != imgs).any(1), region)
            and torch.equal((torch_engine != imgs).any(1), region))
    if fill in ("region_mean", "image_mean", 0.5):
        assert torch.allclose(erase(imgs[2], masks[2], [0, 10, 21], fill), copy[2], atol=1e-5)
    assert torch.equal(copy[3:], imgs[3:])


@pytest.mark.parametrize("fill", FILLS + (0.5,))
def test_mirrored_masks_erase_as_flipped_ones(faces, fill):
    """The dataset leaves the masks of flipped images unflipped and says so (``mirrored``): the same
    pixels, classes and draws as with flipped masks."""
    imgs, masks = faces
    flipped_imgs, flipped_masks = flip_pair(imgs, masks)
    sel = torch.zeros(len(imgs), NUM_CLASSES, dtype=torch.bool)
    sel[0, class_id("right_eye")] = sel[1, [class_id("right_cheek"), class_id("hair")]] = True
    sel[2, [0, class_id("left_brow")]] = sel[3, class_id("left_ear")] = True
    a = erase(flipped_imgs, list(masks.numpy()), sel, fill, gen(15), mirrored=[True] * len(imgs))
    b = erase(flipped_imgs, flipped_masks, sel, fill, gen(15))
    assert torch.equal(a, b) and not torch.equal(a, flipped_imgs)
    c = erase(flipped_imgs.clone().requires_grad_(True), masks, sel, fill, gen(15),
              mirrored=[True] * len(imgs))
    assert torch.allclose(c, a, atol=1e-6)  # the torch engine reads mirrored masks alike
    t = FSErasing(n_erase=2, present_only=True)
    assert torch.equal(t.get_params(list(masks.numpy()), gen(16), mirrored=[True] * len(imgs)),
                       t.get_params(flipped_masks, gen(16)))


@pytest.fixture(scope="module")
def odd_masks(faces):
    """The faces' masks plus ids outside the 25 classes (255) and a short-runs map, as arrays and as
    runs with zero-length runs mixed in."""
    _, masks = faces
    masks = masks.numpy().copy()
    masks[0, 5:9, 100:112] = 255
    masks[1, ::2, ::3] = class_id("left_eye")  # many one-pixel runs of a sided class
    runs = [_runs(m) for m in masks]
    runs[2] = (np.r_[runs[2][0][:3], 7, runs[2][0][3:]].astype(np.uint8),
               np.r_[runs[2][1][:3], 0, runs[2][1][3:]])
    return masks, MaskRuns(runs, 112, 112)


def test_mask_runs_maps_present_and_checks(odd_masks):
    masks, runs = odd_masks
    assert len(runs) == len(masks) and all(np.array_equal(a, b) for a, b in zip(runs.maps(), masks))
    present = np.stack([np.bincount(m.ravel(), minlength=256)[:NUM_CLASSES] > 0 for m in masks])
    assert np.array_equal(runs.present(), present)
    assert "6 maps of 112x112" in repr(runs)
    with pytest.raises(FSEError, match="cover its 112x112 pixels"):
        MaskRuns([_runs(masks[0]), _runs(masks[1][:-1])], 112, 112)
    with pytest.raises(FSEError, match="cover"):
        MaskRuns([(np.zeros(0, np.uint8), np.zeros(0, np.uint8)), _runs(masks[0])], 112, 112)
    with pytest.raises(FSEError, match="uint8 values"):
        MaskRuns([(np.zeros(1, np.int64), np.full(1, 112 * 112))], 112, 112)
    with pytest.raises(FSEError, match="non-negative"):
        MaskRuns([(np.zeros(2, np.uint8), np.array([112 * 112 + 1, -1]))], 112, 112)
    # the mask cache's batch form
    joined = MaskRuns.joined(runs.values, runs.lengths, runs.counts, 112, 112)
    assert all(np.array_equal(a, b) for a, b in zip(joined.maps(), masks))
    for counts in (runs.counts[:-1], np.r_[runs.counts[:-1], 0, runs.counts[-1]], runs.counts + 1):
        with pytest.raises(FSEError, match="add up to|cover"):
            MaskRuns.joined(runs.values, runs.lengths, counts, 112, 112)


def _selections(n: int, seed: int) -> np.ndarray:
    """[n, 30] random selections: none, one class, several, ids 25..29 (never in a map)."""
    rng = np.random.default_rng(seed)
    sel = rng.random((n, 30)) < rng.choice([0.0, 0.04, 0.15, 0.5], (n, 1))
    sel[0] = False
    sel[1, class_id("left_eye")] = True
    return sel


@pytest.mark.parametrize("fill", FILLS + (0.5,))
def test_runs_erase_as_whole_masks(faces, odd_masks, fill):
    """erase on MaskRuns (the dataset's form) gives the same pixels, classes, draws and values as on
    the whole masks, flipped images (mirrored) or not, for any selection."""
    imgs, _ = faces
    masks, runs = odd_masks
    for seed in range(4):
        sel = _selections(len(masks), seed)
        mirrored = np.random.default_rng(seed).random(len(masks)) < 0.5
        a = erase(imgs, runs, sel, fill, gen(seed), mirrored=mirrored)
        b = erase(imgs, list(masks), sel, fill, gen(seed), mirrored=mirrored)
        shown = [flip_mask(m) if f else m for m, f in zip(masks, mirrored)]
        c = erase(imgs, shown, sel, fill, gen(seed))
        assert torch.equal(a, b) and torch.equal(a, c) and not torch.equal(a, imgs)
    rows = list(imgs.clone())  # a list of [C,H,W] tensors, as the dataset's samples
    assert erase(rows, runs, sel, fill, gen(9), mirrored=mirrored, inplace=True) is rows
    assert torch.equal(torch.stack(rows),
                       erase(imgs, list(masks), sel, fill, gen(9), mirrored=mirrored))
    with pytest.raises(FSEError, match="mask shape"):
        erase(imgs[:, :, :100].contiguous(), runs, sel, fill)


def test_runs_on_the_torch_engine_and_get_params(faces, odd_masks):
    imgs, _ = faces
    masks, runs = odd_masks
    sel, mirrored = _selections(len(masks), 5), [True, False] * 3
    # not the numpy engine: the torch one on the expanded maps
    graded = imgs.clone().requires_grad_(True)
    out = erase(graded, runs, sel, "region_mean", mirrored=mirrored).detach()
    ref = erase(imgs, list(masks), sel, "region_mean", mirrored=mirrored)
    assert torch.allclose(out, ref, atol=1e-5)
    for t in (FSErasing(n_erase=2, present_only=True), FSErasing(n_erase=(0, 4), present_only=True),
              FSErasing(present_only=True), FSErasing(n_erase=(1, 3)), FSErasing()):
        assert torch.equal(t.get_params(runs, gen(16), mirrored=mirrored),
                           t.get_params(list(masks), gen(16), mirrored=mirrored))
