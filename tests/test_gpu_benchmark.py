"""benchmarks/gpu.py, the one command of a GPU window: ``--smoke`` runs every stage on CPU at tiny
sizes (so the command is known to work before a window opens), a stage is stopped at its box and
later ones skipped when the budget is spent, bad flags are one line and exit status 2, Ctrl-C one
line and 130."""
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from badinput import assert_user_error, run_fse

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu.py"


@pytest.fixture(scope="module")
def gpu():
    spec = importlib.util.spec_from_file_location("bench_gpu", SCRIPT)
    # dataclasses look themselves up
    module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def running(marker: str) -> list[int]:
    """Processes whose command line (arguments joined by spaces) holds ``marker``."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if proc.name.isdigit() and marker in cmdline:
            pids.append(int(proc.name))
    return pids


# ~100 s of CPU in 14 processes; minutes of wall time on a loaded 2-core machine
@pytest.mark.timeout(900)
def test_smoke_runs_every_stage_on_cpu(arcface_torch_dir, tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    run = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--budget", "3000",
                          "--out", str(out), "--work", str(work),
                          "--arcface-dir", str(arcface_torch_dir)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads((out / "gpu.json").read_text())
    stages = report["stages"]
    assert list(stages) == ["env", "data", "cache", "pipeline", "train_v2", "erasing", "cam",
                            "study"]
    assert {name: s["status"] for name, s in stages.items()} == dict.fromkeys(stages, "ok"), stages
    fig = {name: s["figures"] for name, s in stages.items()}
    assert fig["env"]["cpus"] == os.cpu_count() and fig["env"]["gpu"] is None
    cache = fig["cache"]["fs16"]
    assert cache["forward"][0] > 0 and cache["end_to_end"] > 0 and cache["ratio_end_to_end"] > 0
    assert fig["pipeline"]["per_worker"]["1"] > 0 and fig["pipeline"]["decode_alone"] > 0
    train = fig["train_v2"]
    assert (train["off"]["samples_per_s"] > 0 and train["fse p=0.5"]["ratio"] > 0
            and train["fse p=1.0"]["ratio"] > 0)
    (kept,) = work.glob("fse_gpu_*")  # the run's own folder inside --work
    logs = {v: (kept / "train_v2" / f"gpu_{v}" / "training.log").read_text()
            for v in ("off", "fse_p_0_5", "fse_p_1_0")}
    assert "FSEMXFaceDataset" not in logs["off"]  # upstream's own dataset without the line
    assert "FSErasing(p=0.5" in logs["fse_p_0_5"] and "FSErasing(p=1.0" in logs["fse_p_1_0"]
    assert set(fig["erasing"]["images_per_s"]) == {"random", "random_1", "random_mix",
                                                   "random_mix_sample", "region_mean", "image_mean"}
    assert fig["cam"]["forward"] > 0 and fig["cam"]["fscam"] > 0
    assert [(r["variant"], r["steps"]) for r in fig["study"]["runs"]] == [("off", 2), ("fse", 2)]
    table = (out / "gpu.md").read_text()
    for title in ("Parser forward-only vs", "Decode pipeline per worker", "Upstream train_v2.py",
                  "FSErasing on ", "FS-CAM vs plain forward", "`fse study --trainer arcface`",
                  "both runs complete: met"):
        assert title in table
    assert table in run.stdout and "Traceback" not in run.stderr
    assert not running(str(work))  # every child ended


def test_the_gpu_runs_study_command_line_is_one_fse_reads(gpu, arcface_torch_dir, tmp_path):
    """The smoke runs the study through the library (fse study refuses --trainer arcface without
    CUDA): the full run's command line is checked here (--device cpu: the device is checked while
    parsing)."""
    from fse_plugin.cli import build_parser
    args = build_parser().parse_args(gpu.study_argv(gpu.full_sizes(16), arcface_torch_dir, tmp_path,
                                                    "cpu"))
    assert (args.trainer, args.network, args.variants, args.seeds, args.steps) == (
        "arcface", "r18", ["off", "fse"], 1, 300)


def test_a_stage_is_stopped_at_its_box_and_the_budget_skips_later_ones(gpu, tmp_path):
    log = tmp_path / "gpu.log"
    log.write_text("")
    ctx = gpu.Context(gpu.SMOKE, tmp_path, log, None, smoke=False)
    ctx.grace_s = 0.5
    marker = f"sleeping in {tmp_path}"

    def sleeper(c, figures):
        figures["started"] = True
        c.python("-c", f"import time; time.sleep(300)  # {marker}")
    stages = [gpu.Stage("slow", sleeper, box_s=3, min_s=0),
              gpu.Stage("late", sleeper, box_s=60, min_s=1000),
              gpu.Stage("fed", sleeper, box_s=60, min_s=0, uses_data=True)]
    t = time.monotonic()
    gpu.run_all(ctx, stages, 100, gpu.Report(tmp_path, ctx, 100, []), [])
    assert time.monotonic() - t < 60
    report = json.loads((tmp_path / "gpu.json").read_text())["stages"]
    assert (report["slow"]["status"] == "timed out"
            and report["slow"]["figures"] == {"started": True})
    assert report["late"]["status"] == "skipped" and "budget spent" in report["late"]["note"]
    assert report["fed"]["status"] == "skipped" and "data" in report["fed"]["note"]
    assert not running(marker) and marker in log.read_text()
    assert "| slow | timed out |" in (tmp_path / "gpu.md").read_text()


def test_a_failed_child_is_recorded_and_the_run_goes_on(gpu, tmp_path):
    log = tmp_path / "gpu.log"
    log.write_text("")
    ctx = gpu.Context(gpu.SMOKE, tmp_path, log, None, smoke=False)
    stages = [gpu.Stage("broken", lambda c, f: c.python("-c", "raise SystemExit('no GPU here')"),
                        60, 0),
              gpu.Stage("fine", lambda c, f: f.update(x=1), 60, 0)]
    report = gpu.Report(tmp_path, ctx, 100, [])
    gpu.run_all(ctx, stages, 100, report, [])
    assert (report.failed() == ["broken"]
            and "no GPU here" in report.data["stages"]["broken"]["note"])
    assert report.data["stages"]["fine"] == {"status": "ok", "seconds": pytest.approx(0, abs=1),
                                             "note": "", "figures": {"x": 1}}


def test_missing_packages_skip_the_stages_that_need_them(gpu, tmp_path):
    log = tmp_path / "gpu.log"
    log.write_text("")
    ctx = gpu.Context(gpu.SMOKE, tmp_path, log, None, smoke=True)
    stages = [s for s in gpu.STAGES if s.name in ("cam", "train_v2")]
    report = gpu.Report(tmp_path, ctx, 100, ["pytorch_grad_cam"])
    gpu.run_all(ctx, stages, 100, report, ["pytorch_grad_cam"])
    notes = {name: s["note"] for name, s in report.data["stages"].items()}
    assert notes == {"train_v2": "lacks an arcface_torch checkout (--arcface-dir)",
                     "cam": "lacks grad-cam, an arcface_torch checkout (--arcface-dir)"}


NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
CASES = [  # {tmp} is the test's folder, which holds a_file
    pytest.param(["--budget", "-1"], ["--budget"], id="budget negative"),
    pytest.param(["--budget", "0"], ["--budget"], id="budget zero"),
    pytest.param(["--budget", "ten"], ["--budget", "ten"], id="budget text"),
    pytest.param(["--budget", "nan"], ["--budget"], id="budget nan"),
    pytest.param(["--stages", "env,gpu"], ["--stages", "gpu"], id="stage unknown"),
    pytest.param(["--stages", "env,env"], ["--stages", "env"], id="stage twice"),
    pytest.param(["--stages", ""], ["--stages"], id="stages empty"),
    pytest.param(["--arcface-dir", "{tmp}/nowhere"], ["--arcface-dir"], id="arcface missing"),
    pytest.param(["--arcface-dir", "{tmp}"], ["--arcface-dir", "train_v2.py"],
                 id="arcface without train_v2"),
    pytest.param(["--out", "{tmp}/a_file"], ["--out"], id="out is a file"),
    pytest.param(["--work", "{tmp}/a_file"], ["--work"], id="work is a file"),
    pytest.param(["--gpus", "2"], ["--gpus"], id="unknown flag"),
    pytest.param(["--child", "env"], ["--child", "--work"], id="child without work"),
    pytest.param([], ["CUDA", "--smoke"], id="full run without CUDA", marks=NO_CUDA),
]


@pytest.mark.parametrize("argv,names", CASES)
def test_bad_flags_are_one_line_and_exit_status_2(gpu, tmp_path, argv, names):
    (tmp_path / "a_file").write_text("x")
    out = tmp_path / "out"
    argv = [a.format(tmp=tmp_path) for a in argv]
    result = run_fse(argv if "--out" in argv else [*argv, "--out", out], entry=gpu.main)
    assert_user_error(result, "gpu.py: error:", *names)
    assert not out.exists()  # refused before anything was written


def test_ctrl_c_stops_the_child_and_is_one_line_with_status_130(tmp_path):
    work = tmp_path / "work"
    proc = subprocess.Popen([sys.executable, str(SCRIPT), "--smoke", "--stages", "env",
                             "--out", str(tmp_path / "out"), "--work", str(work)],
                            stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    marker = f"--child env --work {work}"
    deadline = time.monotonic() + 120
    while not running(marker) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)  # until the stage's child runs (an event, not a guess at a duration)
    assert running(marker), "the env stage's child never started"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == "gpu.py: interrupted" and "Traceback" not in err
    assert not running(marker)
    stages = json.loads((tmp_path / "out" / "gpu.json").read_text())["stages"]
    assert stages["env"]["status"] == "interrupted"
