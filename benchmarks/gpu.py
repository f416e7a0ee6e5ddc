"""Every GPU figure of the plugin in one command, each stage time-boxed inside one total budget.

    python benchmarks/gpu.py [--budget 500] [--out gpu_out] [--arcface-dir DIR]
        [--stages cache,train_v2]
    python benchmarks/gpu.py --smoke      # every stage on CPU at tiny sizes
                                          # (tests/test_gpu_benchmark.py)

Stages, in this order, each in child processes (the GPU window's command:
benchmarks/README.md, GPU):

  env       GPU, driver, torch / CUDA / cuDNN, CPUs, the cache build's default workers, git,
            the commit
  data      a synthetic rec (40 x 25 faces with exact masks); a rec tiled from it for train_v2 +
            its mask cache; a patched copy of the arcface_torch checkout
  cache     per feature_scale 1, 2, 4: parser forward-only vs ``fse cache build`` end to end (bf16,
            channels_last, the build's default workers and chunk size):
            benchmarks/maskcache.py --build-only
  pipeline  the build's decode pipeline per worker vs read + decode alone:
            benchmarks/maskcache.py --pipeline-only
  train_v2  upstream train_v2.py (the patched copy, torchrun, one GPU) r50 fp16 batch 256:
            samples/s from its own training.log without config.fse, with p=0.5 and with p=1.0
  erasing   FSErasing on GPU tensors (a batch of 256 with real region shapes),
            images/s per fill
  cam       FS-CAM images/s vs the plain forward, r50 bf16: benchmarks/cam.py
  study     ``fse study --trainer arcface``, variants off and fse, one seed, 300 steps

A stage that would start with less than its minimum time left is skipped with a note; one that
outruns its box (or the budget) is stopped and keeps the figures it had; one that fails is recorded
and the next one runs (exit status 1 at the end). ``OUT/gpu.json`` and ``OUT/gpu.md`` (the tables,
each goal marked) are rewritten after every stage, so a run cut short keeps what it measured;
``OUT/gpu.log`` holds each child's command, output, wall and CPU seconds. No network: the data is
synthetic and the parsers and networks random-init (costs do not depend on weights). Missing
packages are named at the start, with how to bring them as wheels; the stages that need them are
skipped. On CPU the arcface_torch stages go through tests/arcface_harness.py, which redirects
train_v2.py's CUDA-only calls; with CUDA nothing is redirected.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
# this checkout's fse_plugin, here and (PYTHONPATH) in every child: installed or not
sys.path.insert(0, str(REPO))
BENCH = REPO / "benchmarks"
HARNESS = REPO / "tests" / "arcface_harness.py"
# a stopped child gets this long after SIGTERM (torchrun tears its workers down) before SIGKILL
GRACE_S = 15.0

PACKAGES = {"torch": "torch", "torchvision": "torchvision", "numpy": "numpy",
            "cv2": "opencv-python-headless", "tqdm": "tqdm", "scipy": "scipy",
            "sklearn": "scikit-learn", "matplotlib": "matplotlib", "tensorboard": "tensorboard",
            "easydict": "easydict", "pytorch_grad_cam": "grad-cam", "ttach": "ttach"}
BASE = ("torch", "torchvision", "numpy", "cv2", "tqdm", "scipy", "sklearn")
def bring(missing: list[str]) -> str:
    """How to bring ``missing`` modules to a GPU node (benchmarks/README.md, GPU)."""
    names = " ".join(PACKAGES[m] for m in missing)
    return (f"make wheels with 'python3 -m pip wheel --no-deps -w .whl {names}' and carry .whl "
            "(benchmarks/README.md)")


# ---------------------------------------------------------------------------------------- sizes


@dataclass(frozen=True)
class Train:
    """train_v2.py's run: one epoch of ``steps`` batches, "Speed" logged every ``frequent``
    steps."""
    network: str
    batch: int
    steps: int
    frequent: int
    workers: int
    fp16: bool


@dataclass(frozen=True)
class Sizes:
    """What the stages run on: ``full_sizes`` on a GPU node, ``SMOKE`` on CPU (seconds per stage).
    Both pass the same flags to the benchmarks (precision included), so a renamed flag fails the
    smoke test too."""
    device: str
    rec: tuple[int, int]  # identities x faces of the synthetic rec
    scales: tuple[int, ...]  # parser feature_scales ...
    # ... and the records each is built on (~3.5 s of an H100's forward)
    cache_images: tuple[int, ...]
    batch: int  # parser batch (cache and pipeline)
    chunk_size: int
    pipeline_images: int
    pipeline_workers: tuple[int, ...]
    train: Train
    cam: tuple[str, ...]  # benchmarks/cam.py's flags
    erase: tuple[int, int]  # batch, timed rounds per fill
    study: dict[str, Any]  # fse study's size flags (StudySizes fields) and network

    @property
    def train_images(self) -> int:
        return self.train.steps * self.train.batch


def full_sizes(cpus: int) -> Sizes:
    return Sizes(
        device="cuda", rec=(40, 25), scales=(1, 2, 4), cache_images=(40_000, 80_000, 120_000),
        batch=512, chunk_size=16_384, pipeline_images=40_000, pipeline_workers=(1, 2, 4, 6),
        train=Train("r50", batch=256, steps=120, frequent=10, workers=max(1, min(12, cpus - 4)),
                    fp16=True),
        cam=("--network", "r50", "--precision", "bf16", "--images", "1024", "--batch-size", "520",
             "--reps", "3", "--threads", "2"),
        erase=(256, 50),
        study={"network": "r18", "fs_images": 200, "parser_epochs": 3, "ids": 100, "per_id": 24,
               "pairs": 200, "seeds": 1, "steps": 300, "batch_size": 128})


SMOKE = Sizes(
    device="cpu", rec=(4, 4), scales=(16,), cache_images=(32,), batch=16, chunk_size=16,
    pipeline_images=48, pipeline_workers=(1,),
    train=Train("mbf", batch=4, steps=3, frequent=1, workers=1, fp16=False),
    cam=("--network", "tiny", "--precision", "bf16", "--images", "4", "--batch-size", "26",
         "--reps", "1", "--threads", "1"),
    erase=(8, 2),
    study={"network": "mbf", "fs_images": 8, "parser_epochs": 1, "ids": 4, "per_id": 2, "pairs": 10,
           "seeds": 1, "steps": 2, "batch_size": 4})


# ---------------------------------------------------------------------------------------- children


class StageTimeout(Exception):
    """The stage's box (or the whole budget) ran out while a child was running; the child was
    stopped."""


class StageError(Exception):
    """A child failed or printed no figures; the message says which and where its output is."""


def stop(proc: subprocess.Popen, grace_s: float) -> None:
    """End a child's process group: SIGTERM, then SIGKILL after ``grace_s`` (torchrun stops its
    workers, which it starts in sessions of their own, on SIGTERM); a Ctrl-C meanwhile is ignored,
    so no child is left."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(proc.pid, sig)
                proc.wait(wait)
                return
            except ProcessLookupError:
                return
            except subprocess.TimeoutExpired:
                continue
    finally:
        signal.signal(signal.SIGINT, previous)


def _what(argv: list[Any]) -> str:
    """The program of a child's command line, for messages: a module, a script (and this script's
    child)."""
    args = [str(a) for a in argv[1:]]
    if args[0] == "-m":
        return args[1]
    return (" ".join([Path(args[0]).name, *args[1:3]]) if "--child" in args[1:2]
            else Path(args[0]).name)


class Context:
    """What a stage runs with: sizes, folders, the arcface_torch checkout, the data stage's figures,
    and ``call`` for its children, which stops them at the stage's deadline. Each child leads a
    process group of its own (in this session, so whatever ends the session ends them too): a Ctrl-C
    at the terminal reaches only this process, which stops them (``close``)."""

    def __init__(self, sizes: Sizes, work: Path, log: Path, arcface: Path | None, smoke: bool
                 ) -> None:
        self.sizes, self.work, self.log, self.arcface, self.smoke = sizes, work, log, arcface, smoke
        self.deadline, self.grace_s = float("inf"), GRACE_S
        # the data stage's figures: the recs and the patched arcface_torch tree
        self.data: dict = {}
        self.child: subprocess.Popen | None = None
        paths = [str(REPO), os.environ.get("PYTHONPATH", "")]
        self.env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p),
                    "TQDM_DISABLE": "1", "PYTHONUNBUFFERED": "1",
                    **({"OMP_NUM_THREADS": "1"} if smoke else {})}

    def call(self, argv: list[Any], cwd: Path | None = None) -> str:
        """Run ``argv`` to its end within the deadline; returns its output (also appended to the
        log)."""
        left = self.deadline - time.monotonic() - self.grace_s
        if left < 1:
            raise StageTimeout(f"no time left to start {_what(argv)}")
        out = self.work / "child.out"
        with out.open("wb") as sink, self.log.open("a") as log:
            log.write(f"\n$ {' '.join(map(str, argv))}\n")
            log.flush()
            t, cpu = time.monotonic(), _children_cpu()
            self.child = subprocess.Popen([str(a) for a in argv], stdin=subprocess.DEVNULL,
                                          stdout=sink, stderr=subprocess.STDOUT, cwd=cwd,
                                          env=self.env, process_group=0)
            try:
                rc = self.child.wait(left)
            except subprocess.TimeoutExpired:
                self.close()
                raise StageTimeout(f"{_what(argv)} stopped after {left:.0f} s") from None
            finally:
                text = out.read_text(errors="replace")
                log.write(f"{text}[{time.monotonic() - t:.1f} s, "
                          f"CPU {_children_cpu() - cpu:.1f} s]\n")
        self.child = None
        if rc != 0:
            tail = " | ".join(text.strip().splitlines()[-3:])[-400:]
            raise StageError(f"{_what(argv)} exited with status {rc}: {tail} "
                             "(gpu.log has its output)")
        return text

    def python(self, *args: Any, cwd: Path | None = None) -> str:
        return self.call([sys.executable, *args], cwd)

    def child_json(self, name: str) -> dict:
        """Run this script's own child ``name`` (one concern in a fresh process) and return its
        figures."""
        self.python(__file__, "--child", name, "--work", self.work,
                    *(["--smoke"] if self.smoke else []),
                    *([] if self.arcface is None else ["--arcface-dir", self.arcface]))
        return json.loads((self.work / f"{name}.json").read_text())

    def close(self) -> None:
        """Stop the child still running, if any (a timeout, Ctrl-C, or an error in this process)."""
        if self.child is not None and self.child.poll() is None:
            stop(self.child, self.grace_s)
        self.child = None


def _children_cpu() -> float:
    """CPU seconds of this process's finished children and theirs (torchrun's workers, DataLoader
    workers)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _bench(name: str):
    """A benchmark script of this folder as a module (its functions are reused, not copied)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    # dataclasses look themselves up
    module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def child_env(sizes: Sizes, work: Path, arcface: Path | None) -> dict:
    """The machine and software the figures come from; the commit measured where the checkout has
    git."""
    import cv2
    import numpy
    import torch

    from fse_plugin.maskcache.settings import default_workers
    env = {"commit": _git("rev-parse", "--short", "HEAD"),
           "changed files": _git("status", "--porcelain"),
           "python": sys.version.split()[0], "torch": torch.__version__, "cuda": torch.version.cuda,
           "cudnn": torch.backends.cudnn.version(), "numpy": numpy.__version__,
           "opencv": cv2.__version__,
           "cpus": os.cpu_count(), "cpus usable": len(os.sched_getaffinity(0)),
           "load average": round(os.getloadavg()[0], 2),
           "cache build workers": "{} decode + {} encode".format(*default_workers()),
           "git (the patches need it)": shutil.which("git") is not None, "gpu": None}
    if env["changed files"] is not None:
        env["changed files"] = len(env["changed files"].splitlines())
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env.update(gpu=f"{props.name} ({props.total_memory / 2 ** 30:.0f} GiB, "
                       f"{torch.cuda.device_count()} visible)",
                   driver=_run_text("nvidia-smi", "--query-gpu=driver_version",
                                    "--format=csv,noheader"))
    return env


def _git(*args: str) -> str | None:
    return _run_text("git", "-C", str(REPO), *args)


def _run_text(*argv: str) -> str | None:
    """A command's output, None where it is missing or fails."""
    if shutil.which(argv[0]) is None:
        return None
    done = subprocess.run(argv, capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else None


def child_data(sizes: Sizes, work: Path, arcface: Path | None) -> dict:
    """The synthetic rec; train_v2's rec (its faces tiled to ``train_images`` records) with a mask
    cache; a patched copy of the arcface_torch checkout (``fse_plugin.patching``, what
    ``fse patch-arcface`` runs)."""
    import numpy as np

    from fse_plugin import maskcache, recordio, synth
    from fse_plugin.patching import PatchError, apply_patches
    rec = synth.write_rec(work / "rec", *sizes.rec, seed=0, workers=None)
    train = _bench("maskcache").tile_rec(rec, work / "train_rec", sizes.train_images)
    with np.load(rec / "gt_masks.npz") as z:
        by_key = dict(zip(z["keys"].tolist(), z["masks"]))
    base = recordio.image_index(rec).keys.tolist()
    masks = np.stack([by_key[base[i % len(base)]] for i in range(sizes.train_images)])
    maskcache.build_from_labels(train, np.arange(sizes.train_images), masks, progress=False)
    index = recordio.image_index(train)
    figures = {"rec": str(rec), "rec_images": len(base), "train_rec": str(train),
               "train_images": len(index.keys), "train_classes": int(index.labels.max()) + 1,
               "patched_tree": None, "patch_error": None}
    if arcface is not None:
        tree = work / "arcface_torch"
        shutil.copytree(arcface, tree,
                        ignore=shutil.ignore_patterns(".git", "work_dirs", "__pycache__"))
        try:
            apply_patches(tree)
            figures["patched_tree"] = str(tree)
        except PatchError as e:
            # e.g. no git on this node: the stages without arcface_torch still run
            figures["patch_error"] = str(e)
    return figures


def child_erasing(sizes: Sizes, work: Path, arcface: Path | None) -> dict:
    """FSErasing called (p=1.0, one region) on a batch already on the device, images/s per fill."""
    import numpy as np
    import torch

    from fse_plugin.erasing import FILLS, FSErasing
    batch, rounds = sizes.erase
    device = torch.device(sizes.device)
    with np.load(work / "rec" / "gt_masks.npz") as z:
        masks = torch.from_numpy(np.resize(z["masks"], (batch, *z["masks"].shape[1:]))).to(device)
    imgs = torch.randn(batch, 3, *masks.shape[1:], device=device)
    generator = torch.Generator(device).manual_seed(0)
    rates = {}
    for fill in FILLS:
        erasing = FSErasing(p=1.0, fill=fill)
        erasing(imgs, masks, generator)  # warm-up
        _sync(device)
        t = time.perf_counter()
        for _ in range(rounds):
            erasing(imgs, masks, generator)
        _sync(device)
        rates[fill] = batch * rounds / (time.perf_counter() - t)
    return {"batch": batch, "rounds": rounds, "device": str(device), "images_per_s": rates}


def _sync(device) -> None:
    if device.type == "cuda":
        import torch
        torch.cuda.synchronize(device)


def study_argv(sizes: Sizes, arcface: Path | None, out: Path, device: str) -> list[str]:
    """The ``fse study`` command line of the study stage: off and fse, the sizes of
    ``sizes.study``."""
    flags = [a for k, v in sizes.study.items() if k != "network"
             for a in (f"--{k.replace('_', '-')}", str(v))]
    return ["study", "--trainer", "arcface", "--arcface-dir", str(arcface),
            "--network", sizes.study["network"], "--variants", "off", "fse", "--device", device,
            "--quiet", "--out", str(out), *flags]


def child_study(sizes: Sizes, work: Path, arcface: Path | None) -> dict:
    """``fse study --trainer arcface`` on CPU: the GPU run's command line, read by fse's own parser,
    then the library call the command makes, with train_v2.py launched through
    tests/arcface_harness.py (the command itself refuses to run without CUDA)."""
    from dataclasses import replace

    from fse_plugin.cli import build_parser
    from fse_plugin.cli.study import settings_from
    from fse_plugin.study import run_study

    def launch(cmd: list[str], cwd: Path, env: dict[str, str]) -> None:
        # one process: the harness alone, without torchrun's start-up
        config = cmd[cmd.index("train_v2.py") + 1]
        subprocess.run([sys.executable, str(HARNESS), str(cwd), config], cwd=cwd, env=env,
                       check=True)
    args = build_parser().parse_args(study_argv(sizes, arcface, work / "study", "cpu"))
    settings = settings_from(args)
    run_study(replace(settings, arcface=replace(settings.arcface, fp16=False, launch=launch)),
              progress=not args.quiet)
    return {}


CHILDREN: dict[str, Callable[[Sizes, Path, Path | None], dict]] = {
    "env": child_env, "data": child_data, "erasing": child_erasing, "study": child_study}


def run_child(name: str, sizes: Sizes, work: Path, arcface: Path | None) -> int:
    figures = CHILDREN[name](sizes, work, arcface)
    (work / f"{name}.json").write_text(json.dumps(figures, indent=1))
    return 0


# ---------------------------------------------------------------------------------------- stages


def stage_env(ctx: Context, figures: dict) -> None:
    figures.update(ctx.child_json("env"))


def stage_data(ctx: Context, figures: dict) -> None:
    figures.update(ctx.child_json("data"))


def stage_cache(ctx: Context, figures: dict) -> None:
    """Per feature_scale, forward-only before and after the build, the build's loop and end-to-end
    rates."""
    s = ctx.sizes
    for scale, images in zip(s.scales, s.cache_images):
        out = ctx.work / f"cache_fs{scale}.json"
        ctx.python(BENCH / "maskcache.py", "--build-only", "--rec", ctx.work / "rec",
                   "--device", s.device, "--precision", "bf16", "--feature-scale", scale,
                   "--images", images, "--batch-size", s.batch, "--chunk-size", s.chunk_size,
                   "--json", out)
        r = json.loads(out.read_text())
        forward = statistics.mean(r["forward"])
        figures[f"fs{scale}"] = {"images": images, "forward": r["forward"],
                                 "build_loop": r["precompute"], "end_to_end": r["end_to_end"],
                                 "ratio_loop": r["precompute"] / forward,
                                 "ratio_end_to_end": r["end_to_end"] / forward}


def stage_pipeline(ctx: Context, figures: dict) -> None:
    s, out = ctx.sizes, ctx.work / "pipeline.json"
    ctx.python(BENCH / "maskcache.py", "--pipeline-only", "--rec", ctx.work / "rec",
               "--images", s.pipeline_images, "--batch-size", s.batch, "--chunk-size", s.chunk_size,
               "--repeat", 1, "--pipeline-workers", *s.pipeline_workers, "--json", out)
    r = json.loads(out.read_text())
    figures.update(decode_alone=r["decode_alone"], per_worker=r["pipeline_per_worker"],
                   ratio=r["ratio"], images=s.pipeline_images)


TRAIN_VARIANTS = {"off": None, "fse p=0.5": 0.5, "fse p=1.0": 1.0}
SPEED = re.compile(r"Speed ([0-9.]+) samples/sec")


def train_config(ctx: Context, output: Path, p: float | None) -> str:
    """A train_v2 config over upstream's configs/base.py: the tiled rec, no verification, config.fse
    or not."""
    t, data = ctx.sizes.train, ctx.data
    lines = ["from easydict import EasyDict as edict", "config = edict()",
             f"config.network = {t.network!r}", f"config.output = {str(output)!r}",
             f"config.rec = {data['train_rec']!r}", f"config.num_classes = {data['train_classes']}",
             f"config.num_image = {data['train_images']}", "config.num_epoch = 1",
             "config.warmup_epoch = 0", f"config.batch_size = {t.batch}", f"config.fp16 = {t.fp16}",
             f"config.frequent = {t.frequent}", f"config.num_workers = {t.workers}",
             "config.val_targets = []", "config.verbose = 10 ** 9"]
    if p is not None:
        lines.append("config.fse = dict("
                     f"masks={str(Path(data['train_rec']) / 'fse_masks')!r}, p={p})")
    return "\n".join(lines) + "\n"


def samples_per_s(log: str) -> tuple[float, list[float]]:
    """The median of train_v2's own "Speed ... samples/sec" lines, the first two (warm-up) left
    out."""
    speeds = [float(v) for v in SPEED.findall(log)]
    if not speeds:
        raise StageError("training.log has no 'Speed ... samples/sec' line")
    return statistics.median(speeds[min(2, len(speeds) - 1):]), speeds


def patched_tree(ctx: Context) -> Path:
    if ctx.data["patched_tree"] is None:
        raise StageError(f"no patched arcface_torch: {ctx.data['patch_error']}")
    return Path(ctx.data["patched_tree"])


def stage_train_v2(ctx: Context, figures: dict) -> None:
    """Upstream train_v2.py under torchrun (one process) per variant; samples/s from its
    training.log."""
    tree = patched_tree(ctx)
    figures.update(asdict(ctx.sizes.train))
    for name, p in TRAIN_VARIANTS.items():
        slug = "gpu_" + re.sub(r"\W+", "_", name)
        output = ctx.work / "train_v2" / slug
        (tree / "configs" / f"{slug}.py").write_text(train_config(ctx, output, p))
        ctx.python("-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", HARNESS,
                   tree, f"configs/{slug}", cwd=tree)
        rate, speeds = samples_per_s((output / "training.log").read_text())
        figures[name] = {"samples_per_s": rate, "speed_lines": speeds}
        if name != "off" and "off" in figures:
            figures[name]["ratio"] = rate / figures["off"]["samples_per_s"]


def stage_erasing(ctx: Context, figures: dict) -> None:
    figures.update(ctx.child_json("erasing"))


CAM_LINE = re.compile(r"^(plain forward|FS-CAM)\s+([0-9.]+)\s+([0-9.]+)", re.M)


def stage_cam(ctx: Context, figures: dict) -> None:
    """benchmarks/cam.py, FS-CAM only (its per-method table for one face), the figures read from its
    output."""
    arcface = ["--arcface-dir", patched_tree(ctx)]
    text = ctx.python(BENCH / "cam.py", "--device", ctx.sizes.device, *ctx.sizes.cam, *arcface,
                      "--methods", "fscam", "--method-images", "1")
    rates = {name: float(wall) for name, wall, _ in CAM_LINE.findall(text)}
    if set(rates) != {"plain forward", "FS-CAM"}:
        raise StageError("benchmarks/cam.py printed no 'plain forward' / 'FS-CAM' rows "
                         "(has its output changed?)")
    figures.update(forward=rates["plain forward"], fscam=rates["FS-CAM"],
                   ratio=rates["FS-CAM"] / (rates["plain forward"] / 26),
                   args=" ".join(ctx.sizes.cam))


def stage_study(ctx: Context, figures: dict) -> None:
    """``fse study --trainer arcface`` (on CPU the same library call through the harness), off and
    fse."""
    study = ctx.sizes.study
    if ctx.sizes.device == "cuda":
        ctx.python("-m", "fse_plugin",
                   *study_argv(ctx.sizes, ctx.arcface, ctx.work / "study", "cuda"))
    else:
        ctx.child_json("study")
    facts = json.loads((ctx.work / "study" / "study.json").read_text())
    figures.update(network=study["network"], steps_asked=study["steps"],
                   timings_s=facts.get("timings_s"),
                   runs=[{"variant": r["variant"], "seed": r["seed"],
                          "steps": r["train"].get("steps"), "clean": r["scores"].get("clean")}
                         for r in facts["runs"]])


@dataclass(frozen=True)
class Stage:
    name: str
    run: Callable[..., None]
    box_s: float  # at most this long
    min_s: float  # not started with less than this left
    needs: tuple[str, ...] = ()  # modules beyond BASE; "arcface" = an arcface_torch checkout
    uses_data: bool = False


STAGES = (
    Stage("env", stage_env, 30, 5),
    Stage("data", stage_data, 60, 20),
    Stage("cache", stage_cache, 200, 60, uses_data=True),
    Stage("pipeline", stage_pipeline, 60, 20, uses_data=True),
    Stage("train_v2", stage_train_v2, 180, 90, ("easydict", "tensorboard", "arcface"),
          uses_data=True),
    Stage("erasing", stage_erasing, 30, 10, uses_data=True),
    Stage("cam", stage_cam, 60, 25, ("pytorch_grad_cam", "ttach", "arcface"), uses_data=True),
    Stage("study", stage_study, 200, 90, ("easydict", "tensorboard", "matplotlib",
                                           "pytorch_grad_cam", "ttach", "arcface")))
NAMES = tuple(s.name for s in STAGES)


# ---------------------------------------------------------------------------------------- the run


@dataclass
class Result:
    status: str  # ok, timed out, failed, skipped, interrupted
    seconds: float = 0.0
    note: str = ""
    figures: dict = field(default_factory=dict)


def missing_packages() -> list[str]:
    return [m for m in PACKAGES if importlib.util.find_spec(m) is None]


def lacks(stage: Stage, missing: list[str], arcface: Path | None) -> str:
    """What ``stage`` needs and this machine lacks, as words ('' when nothing)."""
    gone = [PACKAGES[m] for m in (*BASE, *stage.needs) if m in missing]
    if "arcface" in stage.needs and arcface is None:
        gone.append("an arcface_torch checkout (--arcface-dir)")
    return ", ".join(gone)


def run_stage(ctx: Context, stage: Stage, budget_end: float) -> Result:
    """One stage within its box and what is left of the budget (in a smoke run, the budget alone:
    CPU times say nothing of a GPU's). A stage's failure is recorded and the run goes on."""
    left = budget_end - time.monotonic()
    if left < stage.min_s:
        return Result("skipped", note=f"budget spent: {left:.0f} s left, "
                                      f"the stage needs ~{stage.min_s:.0f} s")
    if stage.uses_data and not ctx.data:
        return Result("skipped", note="no data: the data stage did not finish")
    box = left if ctx.smoke else min(stage.box_s, left)
    ctx.deadline = time.monotonic() + box
    say(f"{stage.name}: started, {box:.0f} s at most")
    figures: dict = {}
    t = time.monotonic()
    try:
        stage.run(ctx, figures)
        return Result("ok", time.monotonic() - t, figures=figures)
    except StageTimeout as e:
        return Result("timed out", time.monotonic() - t, f"{e} (box {box:.0f} s)", figures)
    except Exception as e:
        # a failed child or a bug here: recorded, the next stage still runs; exit status 1
        return Result("failed", time.monotonic() - t, f"{type(e).__name__}: {e}", figures)
    finally:
        ctx.close()


class Report:
    """gpu.json and gpu.md, rewritten whole after every stage (atomically: a run cut short leaves
    the stages it finished)."""

    def __init__(self, out: Path, ctx: Context, budget: float, missing: list[str]) -> None:
        self.out = out
        self.data = {"budget_s": budget, "smoke": ctx.smoke, "device": ctx.sizes.device,
                     "missing_packages": [PACKAGES[m] for m in missing], "sizes": asdict(ctx.sizes),
                     "stages": {}}

    def __call__(self, name: str, result: Result) -> None:
        from fse_plugin.common.files import atomic_write
        self.data["stages"][name] = asdict(result)
        atomic_write(self.out / "gpu.json", json.dumps(self.data, indent=1, default=str).encode())
        atomic_write(self.out / "gpu.md", md_tables(self.data).encode())

    def failed(self) -> list[str]:
        return [name for name, r in self.data["stages"].items() if r["status"] == "failed"]

    def __repr__(self) -> str:
        return f"Report({self.out}, {len(self.data['stages'])} stages)"


def run_all(ctx: Context, stages: list[Stage], budget: float, report: Report, missing: list[str]
            ) -> None:
    """The stages in order, inside ``budget`` seconds in all, each recorded as it ends."""
    budget_end = time.monotonic() + budget
    for stage in stages:
        gone = lacks(stage, missing, ctx.arcface)
        t = time.monotonic()
        try:
            result = (Result("skipped", note=f"lacks {gone}") if gone
                      else run_stage(ctx, stage, budget_end))
        except KeyboardInterrupt:
            report(stage.name, Result("interrupted", time.monotonic() - t, "Ctrl-C"))
            raise
        if result.status == "ok" and stage.name == "data":
            ctx.data = result.figures
        say(f"{stage.name}: {result.status}"
            + ("" if result.status == "skipped" else f" in {result.seconds:.1f} s")
            + (f": {result.note}" if result.note else ""))
        report(stage.name, result)


def say(line: str) -> None:
    print(f"[gpu] {line}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------- tables


def _n(x: float | None, digits: int = 0) -> str:
    return "-" if x is None else f"{x:,.{digits}f}"


def _goal(value: float | None, goal: float, judged: bool) -> str:
    if not judged:
        return "not judged (CPU)"
    return "-" if value is None else ("met" if value >= goal else "**missed**")


def md_tables(report: dict) -> str:
    st = report["stages"]
    fig = {name: s["figures"] for name, s in st.items()}
    env = fig.get("env", {})
    used = sum(s["seconds"] for s in st.values())
    lines = [f"# GPU benchmark "
             f"({'smoke run on CPU, tiny sizes' if report['smoke'] else report['device']})", "",
             f"Budget {report['budget_s']:.0f} s, stages took {used:.0f} s.", "",
             "| environment | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in env.items()]
    if report["missing_packages"]:
        lines.append(f"| missing packages | {', '.join(report['missing_packages'])} |")
    lines += ["", "| stage | status | seconds | note |", "|---|---|---:|---|"]
    lines += [f"| {n} | {s['status']} | {s['seconds']:.1f} | {s['note']} |" for n, s in st.items()]
    for table in (_cache_md, _pipeline_md, _train_md, _erasing_md, _cam_md, _study_md):
        lines += table(fig, not report["smoke"])
    return "\n".join(lines) + "\n"


def _cache_md(fig: dict, judged: bool) -> list[str]:
    rows = fig.get("cache") or {}
    if not rows:
        return []
    out = ["", "Parser forward-only vs `fse cache build` (goal: end to end >= 0.8x forward)", "",
           "| feature_scale | images | forward img/s (before / after) | build loop masks/s "
           "| end to end masks/s | end to end / forward | loop / forward | goal |",
           "|---:|---:|---:|---:|---:|---:|---:|---|"]
    for name, r in rows.items():
        out.append(f"| {name[2:]} | {r['images']:,} "
                   f"| {_n(r['forward'][0])} / {_n(r['forward'][1])} "
                   f"| {_n(r['build_loop'])} | {_n(r['end_to_end'])} | {r['ratio_end_to_end']:.2f} "
                   f"| {r['ratio_loop']:.2f} | {_goal(r['ratio_end_to_end'], 0.8, judged)} |")
    return out


def _pipeline_md(fig: dict, judged: bool) -> list[str]:
    r = fig.get("pipeline") or {}
    if not r:
        return []
    out = ["", f"Decode pipeline per worker vs read + decode alone "
               f"({r['decode_alone']:,.0f} images/s, one process)",
           "", "| decode workers | images/s per worker | vs alone |", "|---:|---:|---:|"]
    out += [f"| {w} | {_n(v)} | {r['ratio'][w]:.2f} |" for w, v in r["per_worker"].items()]
    return out


def _train_md(fig: dict, judged: bool) -> list[str]:
    r = fig.get("train_v2") or {}
    runs = [n for n in TRAIN_VARIANTS if n in r]
    if not runs:
        return []
    out = ["", f"Upstream train_v2.py, {r['network']}, {'fp16' if r['fp16'] else 'fp32'}, "
               f"batch {r['batch']}, {r['workers']} workers, {r['steps']} steps "
               "(goal: with the line >= 0.97x without)", "",
           "| config | samples/s (train_v2's log) | vs off | goal |", "|---|---:|---:|---|"]
    for n in runs:
        ratio = r[n].get("ratio")
        out.append(f"| {n} | {_n(r[n]['samples_per_s'], 1)} | {_n(ratio, 3)} | "
                   f"{'-' if n == 'off' else _goal(ratio, 0.97, judged)} |")
    return out


def _erasing_md(fig: dict, judged: bool) -> list[str]:
    r = fig.get("erasing") or {}
    if not r:
        return []
    return ["", f"FSErasing on {r['device']}, batch {r['batch']}, p=1.0", "",
            "| fill | images/s |", "|---|---:|",
            *[f"| {k} | {_n(v)} |" for k, v in r["images_per_s"].items()]]


def _cam_md(fig: dict, judged: bool) -> list[str]:
    r = fig.get("cam") or {}
    if not r:
        return []
    return ["", f"FS-CAM vs plain forward (`benchmarks/cam.py {r['args']}`)", "",
            "| forward img/s | FS-CAM img/s | FS-CAM / (forward / 26) |", "|---:|---:|---:|",
            f"| {_n(r['forward'], 1)} | {_n(r['fscam'], 1)} | {r['ratio']:.2f} |"]


def _study_md(fig: dict, judged: bool) -> list[str]:
    r = fig.get("study") or {}
    if not r:
        return []
    done = ({x["variant"] for x in r["runs"] if (x["steps"] or 0) >= r["steps_asked"]}
            == {"off", "fse"})
    out = ["", f"`fse study --trainer arcface`, {r['network']}, {r['steps_asked']} steps asked "
               f"(goal: both runs complete: {_goal(float(done), 1.0, True)})", "",
           "| variant | seed | steps run | clean accuracy |", "|---|---:|---:|---:|"]
    out += [f"| {x['variant']} | {x['seed']} | {x['steps']} | {_n(x['clean'], 2)} |"
            for x in r["runs"]]
    return out


# ---------------------------------------------------------------------------------------- main


def arcface_checkout(given: str | None) -> Path | None:
    """--arcface-dir, else $ARCFACE_TORCH_DIR, else .gpu/arcface_torch in the repo (what the GPU
    window carries), else shared/arcface_torch beside the repo or a parent; None without a
    train_v2.py."""
    candidates = [given, os.environ.get("ARCFACE_TORCH_DIR"), REPO / ".gpu" / "arcface_torch",
                  *(p / "shared" / "arcface_torch" for p in REPO.parents)]
    for c in candidates:
        if c and (Path(c) / "train_v2.py").is_file():
            return Path(c).resolve()
    return None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from fse_plugin.cli.grammar import Parser
    from fse_plugin.cli.types import dir_type, names_type, number_type, output_dir_type
    ap = Parser(prog="gpu.py", description=__doc__.split("\n")[0])
    ap.add_argument("--budget", type=number_type(lo=0, lo_open=True), default=500.0,
                    help="total seconds for all stages, each also boxed "
                         "(a GPU window allows 600 per command)")
    ap.add_argument("--out", type=output_dir_type(), default=Path("gpu_out"),
                    help="folder for gpu.json, gpu.md and gpu.log")
    ap.add_argument("--work", type=output_dir_type(), default=None,
                    help="keep the run's data in a new fse_gpu_* folder inside this one "
                         "(default: a temporary folder, removed at the end)")
    ap.add_argument("--arcface-dir", type=dir_type(), default=None,
                    help="pristine arcface_torch checkout (default: $ARCFACE_TORCH_DIR, "
                         ".gpu/arcface_torch, shared/arcface_torch beside the repo)")
    ap.add_argument("--stages", type=names_type(NAMES), default=list(NAMES),
                    help="comma-separated stages to run "
                         "(data is added where a chosen stage uses it)")
    ap.add_argument("--smoke", action="store_true",
                    help="every stage on CPU at tiny sizes (what the tests run)")
    ap.add_argument("--child", choices=tuple(CHILDREN), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child and args.work is None:
        ap.error("argument --child: needs --work")
    if args.arcface_dir is not None and not (args.arcface_dir / "train_v2.py").is_file():
        ap.error(f"argument --arcface-dir: {args.arcface_dir} has no train_v2.py; "
                 "pass recognition/arcface_torch of an insightface checkout")
    import torch
    if not (args.smoke or args.child or torch.cuda.is_available()):
        ap.error("this machine has no CUDA device: the full run measures a GPU; "
                 "--smoke runs every stage on CPU at tiny sizes")
    return args


def chosen_stages(names: list[str]) -> list[Stage]:
    wanted = set(names)
    if any(s.uses_data for s in STAGES if s.name in wanted):
        wanted.add("data")
    return [s for s in STAGES if s.name in wanted]


def main(argv: list[str] | None = None) -> int:
    missing = missing_packages()
    # the flags' own checks need torch; no stage runs without these
    if any(m in missing for m in BASE):
        print(f"gpu.py: error: missing {', '.join(PACKAGES[m] for m in missing)}: "
              f"install them, or {bring(missing)}", file=sys.stderr)
        return 2
    args = parse_args(argv)
    sizes = SMOKE if args.smoke else full_sizes(os.cpu_count() or 1)
    arcface = arcface_checkout(args.arcface_dir)
    if args.child:
        return run_child(args.child, sizes, args.work, arcface)
    if missing:
        say(f"missing {', '.join(PACKAGES[m] for m in missing)}: "
            f"the stages that need them are skipped; {bring(missing)}")
    if args.work is not None:
        args.work.mkdir(parents=True, exist_ok=True)
    # a new folder: nothing earlier is touched
    work = Path(tempfile.mkdtemp(prefix="fse_gpu_", dir=args.work))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu.log").write_text("")
    ctx = Context(sizes, work, args.out / "gpu.log", arcface, args.smoke)
    report = Report(args.out, ctx, args.budget, missing)
    try:
        run_all(ctx, chosen_stages(args.stages), args.budget, report, missing)
    finally:  # also on Ctrl-C, which the entry below reports
        ctx.close()
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    print(md_tables(report.data))
    if report.failed():
        print(f"gpu.py: failed: {', '.join(report.failed())} (see {args.out / 'gpu.log'})",
              file=sys.stderr)
        return 1
    return 0


def _terminated(signum, frame) -> None:
    raise KeyboardInterrupt  # SIGTERM (a job's time limit) stops the children as Ctrl-C does


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _terminated)
    # as the fse command does: Ctrl-C stops the run even when started from a shell that ignores
    # SIGINT for its background jobs (the ignored disposition is inherited)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # the children were stopped on the way out
        print("gpu.py: interrupted", file=sys.stderr)
        sys.exit(130)
