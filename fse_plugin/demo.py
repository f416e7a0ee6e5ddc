"""`fse demo`: the whole plugin on synthetic faces, on a CPU, in minutes.

synth faces -> parser trained briefly -> mask cache precomputed with it -> two small ArcFace models
(with and without FSErasing, a compact loop over the plugin's dataset) -> verification packs and the
semantic-occlusion benchmark -> FS-CAM of both -> ``report.md`` with pictures. Everything is seeded;
sizes are flags. The recognition loop here is for the demo only: real training is arcface_torch's
``train_v2.py`` with the one config line (see README).
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from fse_plugin import labels
from fse_plugin.common import masks_path_for, to_uint8, warmup_cosine


@dataclass
class DemoSizes:
    """Data sizes and time budgets (seconds) of one demo run."""
    fs_images: int = 1200         # FaceSynthetics-layout 512x512 images for the parser
    ids: int = 300                # training identities of the rec
    per_id: int = 16              # images per identity
    pairs: int = 600              # verification pairs of held-out identities
    parser_seconds: float = 240.0
    recognizer_seconds: float = 150.0
    parser_epochs: int = 0        # > 0: train the parser this many epochs instead of parser_seconds
    recognizer_steps: int = 0     # > 0: this many steps instead of recognizer_seconds
    cam_pairs: int = 16
    occlusion_pairs: int = 300


FULL = DemoSizes()
QUICK = DemoSizes(fs_images=100, ids=24, per_id=6, pairs=40, parser_seconds=15.0, recognizer_seconds=8.0,
                  cam_pairs=3, occlusion_pairs=16)


# ------------------------------------------------------------------------------------------------
# The demo's recognition training: ArcFace margin head + SGD, a wall-clock budget
# ------------------------------------------------------------------------------------------------

class ArcMarginHead(nn.Module):
    """ArcFace's additive angular margin over L2-normalised class centres (no Partial FC: the demo
    has hundreds of identities, not millions)."""

    def __init__(self, embedding_size: int, num_classes: int, s: float = 32.0, m: float = 0.3) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_size).normal_(0, 0.01))
        self.s, self.m = s, m

    def forward(self, emb: torch.Tensor, labels_: torch.Tensor) -> torch.Tensor:
        cos = F.linear(F.normalize(emb), F.normalize(self.weight)).clamp(-1 + 1e-6, 1 - 1e-6)
        target = torch.cos(torch.acos(cos.gather(1, labels_[:, None])) + self.m)
        logits = cos.scatter(1, labels_[:, None], target)
        return F.cross_entropy(self.s * logits, labels_)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(classes={self.weight.shape[0]}, s={self.s}, m={self.m})"


def train_recognizer(rec_dir: str | os.PathLike, out: str | os.PathLike, fse: dict | None, seconds: float = 0.0,
                     seed: int = 0, batch_size: int = 64, lr: float = 0.1, num_workers: int = 1,
                     device: str = "cpu", progress: bool = True, steps: int = 0) -> dict[str, Any]:
    """Train ``iresnet_tiny`` on the rec through ``FSEMXFaceDataset`` (erasing when ``fse`` is given)
    for a wall-clock budget of ``seconds``, or for ``steps`` steps when > 0. The learning rate follows
    a cosine over the budget, so a timed run anneals properly whatever the machine's speed; a run
    counted in steps repeats bit for bit (same seed, same thread count). Saves the backbone
    state_dict to ``out`` (arcface_torch's ``model.pt`` convention)."""
    if steps <= 0 and seconds <= 0:
        raise ValueError("train_recognizer: give a positive seconds or steps budget")
    from fse_plugin.backbone import iresnet_tiny
    from fse_plugin.dataset import FSEMXFaceDataset

    torch.manual_seed(seed)
    dataset = FSEMXFaceDataset(rec_dir, 0, fse=fse)
    num_classes = int(dataset.labels.max()) + 1
    generator = torch.Generator().manual_seed(seed)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=True, drop_last=True, num_workers=num_workers,
        generator=generator, persistent_workers=num_workers > 0,
        worker_init_fn=_seed_worker(seed))
    backbone = iresnet_tiny().to(device)
    head = ArcMarginHead(512, num_classes).to(device)
    opt = torch.optim.SGD([{"params": backbone.parameters()}, {"params": head.parameters()}], lr=lr,
                          momentum=0.9, weight_decay=5e-4)
    counted = steps > 0
    budget = steps if counted else seconds
    start, step, epoch, losses = time.perf_counter(), 0, 0, []

    def spent() -> float:
        return step if counted else time.perf_counter() - start

    bar = tqdm(total=round(budget), desc="train " + ("fse" if fse else "baseline"), unit="step" if counted else "s",
               disable=not progress)
    done = False
    while not done:
        for img, label in loader:
            frac = spent() / budget
            if frac >= 1.0:
                done = True
                break
            for g in opt.param_groups:
                g["lr"] = warmup_cosine(frac, step, lr, 50)
            loss = head(backbone(img.to(device)), label.to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(backbone.parameters(), 5.0)
            opt.step()
            step += 1
            losses.append(float(loss.detach()))
            bar.n = min(round(budget), round(spent()))
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}", epoch=epoch)
        epoch += 1
    bar.close()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(backbone.state_dict(), out)
    return {"steps": step, "epochs": epoch, "samples": step * batch_size, "seconds": time.perf_counter() - start,
            "final_loss": float(np.mean(losses[-20:])) if losses else float("nan"),
            "missing_masks": dataset.missing_masks, "weights": str(out)}


def _seed_worker(seed: int):
    """arcface_torch's worker seeding (num_workers * rank + worker_id + seed), rank 0."""
    def init(worker_id: int) -> None:
        info = torch.utils.data.get_worker_info()
        s = info.num_workers * 0 + worker_id + seed
        np.random.seed(s)
        torch.manual_seed(s)
    return init


# ------------------------------------------------------------------------------------------------
# Pictures
# ------------------------------------------------------------------------------------------------

def _save_rgb(path: Path, rgb: np.ndarray, scale: int = 2) -> Path:
    big = cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    cv2.imwrite(str(path), cv2.cvtColor(big, cv2.COLOR_RGB2BGR))
    return path


def erased_samples(rec_dir: Path, masks_path: Path, path: Path, n: int = 8, seed: int = 0) -> Path:
    """Row 1: faces; row 2: their cached masks; rows 3-4: two FSErasing draws each."""
    from fse_plugin import recordio
    from fse_plugin.erasing import FSErasing
    from fse_plugin.maskcache import MaskCache

    reader = recordio.open_rec(rec_dir)
    keys = recordio.image_index(reader).keys
    cache = MaskCache(masks_path)
    gen = torch.Generator().manual_seed(seed)
    eraser = FSErasing(p=1.0, n_erase=(1, 3), classes=[c for c in range(1, labels.NUM_CLASSES)], present_only=True)
    picks = np.linspace(0, len(keys) - 1, n).round().astype(int)
    cols = []
    for i in picks:
        _, payload = recordio.unpack(reader.read(int(keys[i])))
        img = recordio.decode_image(payload)
        mask = cache.get(int(keys[i]))
        x = torch.from_numpy(img).permute(2, 0, 1).float().div(127.5).sub(1)
        m = torch.from_numpy(mask)
        draws = [to_uint8(eraser(x, m, generator=gen)) for _ in range(2)]
        cols.append(np.concatenate([img, labels.colorize(mask)] + draws, 0))
    return _save_rgb(path, np.concatenate(cols, 1))


def parser_vs_truth(rec_dir: Path, masks_path: Path, path: Path, n: int = 8) -> tuple[Path, dict[str, float]]:
    """Faces, ground truth and the cached parser masks side by side; plus per-class F1 of the whole
    cache against the synthetic ground truth (the parser's accuracy on the actual training data)."""
    from fse_plugin import recordio
    from fse_plugin.maskcache import MaskCache
    from fse_plugin.parsing import ParserMetrics, confusion_matrix

    gt = np.load(rec_dir / "gt_masks.npz")
    keys, truth = gt["keys"], gt["masks"]
    cache = MaskCache(masks_path)
    pred = np.stack([cache.get(int(k)) for k in keys])
    scores = ParserMetrics.from_confusion(confusion_matrix(pred, truth))
    reader = recordio.open_rec(rec_dir)
    picks = np.linspace(0, len(keys) - 1, n).round().astype(int)
    cols = []
    for i in picks:
        _, payload = recordio.unpack(reader.read(int(keys[i])))
        cols.append(np.concatenate([recordio.decode_image(payload), labels.colorize(truth[i]),
                                    labels.colorize(pred[i])], 0))
    _save_rgb(path, np.concatenate(cols, 1))
    return path, {"mean_f1": float(scores.mean_f1), "mean_iou": float(scores.mean_iou),
                  "pixel_accuracy": float((pred == truth).mean())}


def pack_roc(models: dict[str, nn.Module], images: np.ndarray, issame: np.ndarray, path: Path) -> Path:
    """ROC of cosine scores on a pack, one curve per model."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import auc, roc_curve
    from fse_plugin.evaluation import embed, fuse_views

    fig, ax = plt.subplots(figsize=(5, 4))
    for name, model in models.items():
        emb = fuse_views(embed(model, images, progress=False))
        emb = emb / np.linalg.norm(emb, axis=1, keepdims=True)
        scores = (emb[0::2] * emb[1::2]).sum(1)
        fpr, tpr, _ = roc_curve(issame.astype(int), scores)
        ax.plot(fpr, tpr, label=f"{name} (AUC {auc(fpr, tpr) * 100:.2f}%)")
    ax.set_xscale("log")
    ax.set_xlim(1e-3, 1)
    ax.set_xlabel("false accept rate")
    ax.set_ylabel("true accept rate")
    ax.grid(ls="--", lw=0.5)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------------------------
# The run
# ------------------------------------------------------------------------------------------------

def run_demo(out: str | os.PathLike = "fse_demo", sizes: DemoSizes = FULL, seed: int = 0, p: float = 0.5,
             device: str = "cpu", progress: bool = True) -> Path:
    """Run every stage into ``out`` and return the path of ``report.md``."""
    from fse_plugin import cam, evaluation, maskcache, parsing, synth

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()

    def stage(name: str) -> None:
        now = time.perf_counter()
        timings[name] = round(now - stage.last, 1)
        stage.last = now
        print(f"[demo] {name} done in {timings[name]:.1f} s", flush=True)
    stage.last = t0

    # 1. synthetic data
    fs_dir = synth.write_facesynthetics(out / "facesynthetics", sizes.fs_images, seed, progress=progress)
    rec_dir = Path(synth.write_rec(out / "rec", sizes.ids, sizes.per_id, seed, progress=progress))
    pack = Path(synth.write_pairs_bin(out / "packs" / "synth_lfw.bin", sizes.pairs, seed + 1, progress=progress))
    stage("synthesise")

    # 2. parser, briefly
    # feature_scale 8 and batch 8: on a CPU, minutes buy steps, and steps buy accuracy (val mean F1
    # 0.91 in 10 minutes against 0.84 for the default 4; batch 32 gets a quarter of the steps and
    # reached 0.29 in 4 minutes). benchmarks/README.md, parser.
    timed = sizes.parser_epochs <= 0
    summary = parsing.train_parser(fs_dir, out / "parser", epochs=1000 if timed else sizes.parser_epochs, batch_size=8,
                                  time_budget=sizes.parser_seconds if timed else None, seed=seed, feature_scale=8,
                                  workers=0, device=device, progress=progress)
    parser_ckpt = Path(summary["best"])
    stage("train parser")

    # 3. mask cache with that parser
    cache_path = maskcache.precompute(rec_dir, parser_ckpt, batch_size=64, device=device, num_workers=1,
                                      overwrite=True, progress=progress)
    stage("precompute masks")

    # 4. two recognizers: baseline and FSErasing, same seed, same budget
    fse_cfg = dict(masks=str(cache_path), p=p)
    runs = {}
    for name, fse in (("baseline", None), ("fserasing", fse_cfg)):
        runs[name] = train_recognizer(rec_dir, out / "models" / f"{name}.pt", fse, sizes.recognizer_seconds,
                                      seed=seed, device=device, progress=progress, steps=sizes.recognizer_steps)
    stage("train recognizers")

    # 5. evaluation: pack accuracy and the occlusion benchmark
    from fse_plugin.backbone import load_backbone
    models = {name: load_backbone(r["weights"], network="tiny") for name, r in runs.items()}
    images, issame = evaluation.load_bin(pack)
    pack_masks = np.load(masks_path_for(pack))
    results = {name: evaluation.evaluate_pack(m, (images, issame), name=name, progress=False)
               for name, m in models.items()}
    roc_png = pack_roc(models, images, issame, out / "roc.png")
    n_occ = min(sizes.occlusion_pairs, len(issame))
    occ = evaluation.occlusion_pack(models, images[:2 * n_occ], issame[:n_occ], pack_masks[:2 * n_occ],
                                    evaluation.occlusion_regions(None, evaluation.parse_groups(None)),
                                    seed=seed, progress=progress, name="synth_lfw")
    occ_files = evaluation.write_occlusion_report(occ, out / "occlusion")
    stage("evaluate")

    # 6. FS-CAM of both models on genuine pairs
    same = np.flatnonzero(issame)[: sizes.cam_pairs]
    cam_out = cam.explain_pairs(models["baseline"], images[2 * same], images[2 * same + 1], pack_masks[2 * same],
                                pack_masks[2 * same + 1], out / "fscam", model2=models["fserasing"],
                                names=("baseline", "fserasing"), device=device, progress=progress)
    stage("fs-cam")

    # 7. pictures and report
    erased_png = erased_samples(rec_dir, cache_path, out / "erased_samples.png", seed=seed)
    parser_png, parser_scores = parser_vs_truth(rec_dir, cache_path, out / "parser_vs_truth.png")
    stage("pictures")
    timings["total"] = round(time.perf_counter() - t0, 1)
    facts = {"sizes": asdict(sizes), "seed": seed, "p": p, "timings_s": timings,
             "parser": {k: summary[k] for k in ("epochs", "steps", "elapsed", "best_val_miou", "val_mf1", "n_train",
                                                 "n_val") if k in summary}, "parser_on_rec": parser_scores, "recognizers": runs,
             "verification": {k: asdict(v) for k, v in results.items()}}
    (out / "demo.json").write_text(json.dumps(facts, indent=2, default=str))
    report = write_report(out, facts, results, occ, occ_files, cam_out, erased_png, parser_png, roc_png)
    print(f"[demo] report: {report}")
    return report


def _rel(out: Path, path: Any) -> str:
    return os.path.relpath(str(path), str(out))


def write_report(out: Path, facts: dict, results: dict, occ, occ_files: dict, cam_out: dict, erased_png: Path,
                 parser_png: Path, roc_png: Path) -> Path:
    """report.md: what the run shows, including when FSErasing did not help."""
    base, fse = results["baseline"], results["fserasing"]
    delta = (fse.accuracy - base.accuracy) * 100
    verdict = ("FSErasing improved clean verification accuracy" if delta > 0 else
               "FSErasing did not improve clean verification accuracy" if delta < 0 else
               "FSErasing left clean verification accuracy unchanged")
    single = [r for r in occ.rows if len(r.classes) == 1]  # the 25 regions, not the groups
    drops = {m: np.mean([r.drop[m] for r in single]) for m in occ.models}
    lines = [
        "# fse_plugin demo report", "",
        f"Synthetic faces, seed {facts['seed']}; sizes {facts['sizes']}; total {facts['timings_s']['total']} s "
        f"(stages: {', '.join(f'{k} {v} s' for k, v in facts['timings_s'].items() if k != 'total')}).", "",
        "## Verification (synthetic held-out identities, 10-fold protocol)", "",
        "| model | accuracy % | std | VAL@FAR=1e-3 | XNorm |", "|---|---|---|---|---|",
        *[f"| {k} | {v.accuracy * 100:.2f} | {v.accuracy_std * 100:.2f} | {v.val:.4f} | {v.xnorm:.2f} |"
          for k, v in results.items()], "",
        f"**{verdict}** on this run ({delta:+.2f} points, {base.n_pairs} pairs). Mean accuracy drop over the "
        f"{len(single)} single occluded regions: " + ", ".join(f"{m} {d:+.2f} points" for m, d in drops.items()) +
        ". With minutes of CPU training on procedural faces, differences of a point or two are within run-to-run "
        "noise; the demo shows the pipeline working, not the paper's gains.", "",
        f"![ROC]({_rel(out, roc_png)})", "",
        "## FSErasing samples (faces, cached parser masks, two erasing draws)", "",
        f"![erased]({_rel(out, erased_png)})", "",
        "## Parser (trained for the demo) against synthetic ground truth", "",
        f"On all {facts['sizes']['ids'] * facts['sizes']['per_id']} training images of the rec: mean F1 "
        f"{facts['parser_on_rec']['mean_f1']:.3f}, mean IoU {facts['parser_on_rec']['mean_iou']:.3f}, pixel accuracy "
        f"{facts['parser_on_rec']['pixel_accuracy']:.3f}. Rows: face, ground truth, parser.", "",
        f"![parser]({_rel(out, parser_png)})", "",
        "## Semantic-occlusion benchmark (region erased in the probe image)", "",
        "```", occ.table(), "```", "",
        f"![occlusion]({_rel(out, occ_files['png'])})", "",
        "## FS-CAM of both models (genuine pairs, target: cosine to the other image)", "",
        f"Full FS-CAM report: [{_rel(out, cam_out['report'])}]({_rel(out, cam_out['report'])})", "",
    ]
    for key, path in cam_out.get("files", {}).items():
        if str(path).endswith(".png"):
            lines += [f"![{key}]({_rel(out, path)})", ""]
    report = out / "report.md"
    report.write_text("\n".join(lines))
    return report
