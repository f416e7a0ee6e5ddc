"""`fse study`: statistics and power, its own sensitivity, verdict wording, variants, probes, runs,
both trainers for real and the quick study end to end (twice: the figures repeat)."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fse_plugin.cli import main
from fse_plugin.common import FSEError
from fse_plugin.experiment import (OUTCOMES, detectable_effect, judge, mean_ci, paired_difference,
                                   seeds_needed, sign_flip_p, verdict)
from fse_plugin.study import parse_variants

HARNESS = Path(__file__).with_name("arcface_harness.py")

# --------------------------------------------------------------------------------------- statistics


def test_mean_ci_is_the_student_t_interval():
    iv = mean_ci([1.0, 2.0, 3.0])
    u = 0.975  # t quantile with 2 degrees of freedom in closed form: (2u - 1) / sqrt(2u(1 - u))
    half = (2 * u - 1) / math.sqrt(2 * u * (1 - u)) * 1.0 / math.sqrt(3)
    assert (iv.mean, iv.std, iv.n) == (2.0, 1.0, 3)
    assert (iv.lo == pytest.approx(2 - half, abs=1e-12)
            and iv.hi == pytest.approx(2 + half, abs=1e-12))
    one = mean_ci([5.0])
    assert one.mean == 5.0 and math.isnan(one.lo) and one.to_json()["ci95"] == [None, None]


def test_paired_difference_t_test_and_sign_flip():
    d = paired_difference([1, 2, 3, 4], [0, 0, 1, 1])  # differences 1, 2, 2, 3
    t = 2 / (math.sqrt(2 / 3) / 2)  # mean / (sd / sqrt(n))
    # Student t, 3 df
    cdf = 0.5 + (math.atan(t / math.sqrt(3)) + (t / math.sqrt(3)) / (1 + t * t / 3)) / math.pi
    assert d.values == (1, 2, 2, 3) and d.mean == 2 and d.n == 4
    assert d.t_test_p == pytest.approx(2 * (1 - cdf), rel=1e-9)
    assert d.sign_flip_p == 2 / 16  # only all-plus and all-minus reach |mean| 2
    assert d.lo > 0
    assert sign_flip_p([3, 1, 1]) == 2 / 8 and sign_flip_p([1, -1]) == 1.0
    assert paired_difference([1, 1], [0, 0]).t_test_p == 0.0  # no spread, non-zero: certain
    tie = paired_difference([1, 1], [1, 1])
    assert tie.t_test_p == 1.0 and tie.mean == 0.0
    with pytest.raises(FSEError, match="equal lengths"):
        paired_difference([1, 2], [1])


@pytest.mark.parametrize("seeds", [3, 5, 8])
def test_the_detectable_effect_is_found_80_percent_of_the_time(seeds):
    """Simulated studies whose true difference is the detectable effect: the paired t-test finds it
    in ~80%."""
    from scipy import stats
    effect = detectable_effect(1.5, seeds)
    diffs = np.random.default_rng(seeds).normal(effect, 1.5, size=(20000, seeds))
    found = stats.ttest_1samp(diffs, 0.0, axis=1).pvalue < 0.05
    assert found.mean() == pytest.approx(0.8, abs=0.015)
    assert detectable_effect(1.0, 1000) == pytest.approx((1.95996 + 0.84162) / math.sqrt(1000),
                                                         rel=0.01)
    assert math.isnan(detectable_effect(1.0, 1)) and detectable_effect(0.0, 5) == 0.0


def test_seeds_needed_is_the_first_count_that_detects_the_effect():
    n = seeds_needed(0.8, 1.0)
    assert detectable_effect(0.8, n) <= 1.0 < detectable_effect(0.8, n - 1)
    assert seeds_needed(0.8, 1.0) < seeds_needed(1.6, 1.0)
    assert seeds_needed(math.nan, 1.0) is None and seeds_needed(100.0, 0.01) is None


# -------------------------------------------------------------------------------------- sensitivity


def _distances(rng, n, accuracy_gap=0.0):
    """Squared distances of n pairs (alternating genuine / impostor) for two noisy models."""
    issame = np.arange(n) % 2 == 0
    base = np.where(issame, 1.2, 2.0)
    return issame, [{"clean": base + rng.normal(0, 0.45 + accuracy_gap * i, n)} for i in range(2)]


def test_sensitivity_parts_add_up_and_scale_with_the_pairs():
    from fse_plugin.study.probes import scores
    from fse_plugin.study.sensitivity import pair_resamples, resampled_scores, sensitivity

    def pair_sd(n):
        issame, (a, b) = _distances(np.random.default_rng(n), n)
        idx = pair_resamples(n, seed=0)
        return float(np.std(resampled_scores(a, issame, idx, scores)["clean"]
                            - resampled_scores(b, issame, idx, scores)["clean"], ddof=1))

    small, large = pair_sd(400), pair_sd(3600)
    assert small / large == pytest.approx(3.0, rel=0.25)  # 1 / sqrt(pairs)
    issame, (a, _) = _distances(np.random.default_rng(0), 200)
    same = resampled_scores(a, issame, pair_resamples(200, 0), scores)
    assert np.all(same["clean"] - same["clean"] == 0)
    s = sensitivity([1.0, -1.0, 2.0, 0.0], [0.25, 0.36, 0.16, 0.25], pairs=1000)
    assert s.sd_seeds == pytest.approx(np.std([1.0, -1.0, 2.0, 0.0], ddof=1))
    assert s.sd_pairs == pytest.approx(math.sqrt(np.mean([0.25, 0.36, 0.16, 0.25])))
    assert s.sd_training ** 2 == pytest.approx(s.sd_seeds ** 2 - s.sd_pairs ** 2)
    assert s.detectable == pytest.approx(detectable_effect(s.sd_seeds, 4))
    assert s.projected(4000) == pytest.approx(math.sqrt(s.sd_training ** 2 + s.sd_pairs ** 2 / 4))
    assert s.seeds_for(1.0, 4000) <= s.seeds_for(1.0)
    noisy = sensitivity([0.1, 0.2], [4.0, 4.0], pairs=100)
    # the pairs explain more than all: no training part
    assert noisy.sd_training == 0.0 and noisy.sd_pairs == 2.0


# ------------------------------------------------------------------------------------------ verdict


def test_judge_follows_rounding_and_the_interval():
    # the case: two accuracies equal to the last printed digit are a tie, never an
    # improvement
    assert judge((0.9466666666666667 - 0.9466666666666665) * 100, -1.0, 1.0) == "tie"
    assert judge(0.004, 0.001, 0.007) == "tie"  # +0.00 as printed
    assert judge(1.0, 0.2, 1.8) == "better" and judge(-1.0, -1.8, -0.2) == "worse"
    assert judge(1.0, -0.2, 2.2) == "within_noise"
    assert judge(0.5, 0.004, 1.0) == "within_noise"  # the interval's bound prints as 0.00
    assert judge(1.0, math.nan, math.nan) == "no_estimate"
    assert judge(-1.0, -1.8, -0.2, higher_is_better=False) == "better"


@pytest.mark.parametrize("diff,lo,hi",
                         [(1.0, 0.2, 1.8), (-1.0, -1.8, -0.2), (1e-16, -1, 1), (1.0, -0.2, 2.2),
                          (3.0, math.nan, math.nan)])
@pytest.mark.parametrize("higher", [True, False])
def test_verdict_words_match_the_outcome(diff, lo, hi, higher):
    from types import SimpleNamespace
    v = verdict("A", "B", "the metric", SimpleNamespace(mean=diff, lo=lo, hi=hi),
                tests="t-test p=0.1", higher_is_better=higher)
    assert v.outcome in OUTCOMES
    good = {"better": "improved" if higher else "reduced",
            "worse": "lowered" if higher else "increased"}
    for outcome, word in good.items():
        assert (f"**A {word} the metric**" in v.sentence) == (v.outcome == outcome)
    assert ("improved" in v.sentence) == (v.outcome == "better" and higher)
    assert ("tied" in v.sentence) == (v.outcome == "tie")
    assert "-0.00" not in v.sentence


# --------------------------------------------------------------------------------- variants, probes


def test_variants_parse_check_and_put_off_first():
    from torchvision.transforms import RandomErasing
    vs = parse_variants(["fse", "random_erasing", "off", "fse:p=1.0,n_erase=(1, 3)"])
    assert [v.name for v in vs] == ["off", "fse", "random_erasing", "fse:p=1.0,n_erase=(1, 3)"]
    assert vs[1].fse_config("/c") == {"masks": "/c", "p": 0.5} and vs[0].fse_config("/c") is None
    assert vs[3].fse == {"p": 1.0, "n_erase": (1, 3)} and vs[3].slug == "fse_p_1_0_n_erase_1_3"
    re = vs[2].transform()
    assert (isinstance(re, RandomErasing)
            and (re.p, re.scale, re.ratio, re.value) == (0.5, (0.02, 0.33), (0.3, 3.3), 0))
    for specs, message in ((["fse"], "must include 'off'"), (["off", "off"], "given twice"),
                           (["off", "fse:q=1"], "unknown key"),
                           (["off", "fse:p=2"], "config.fse.p"),
                           (["off", "cutout"], "unknown variant"),
                           (["off", "random_erasing:size=3"], "'size'"),
                           (["off", "fse:fill=random_mix"], "Python literal")):
        with pytest.raises(FSEError, match=message):
            parse_variants(specs)


@pytest.fixture(scope="module")
def pack(synth_bin):
    from fse_plugin.experiment import read_pack
    return read_pack(synth_bin)


def test_probe_scores_are_the_benchmarks_numbers(pack):
    """The study's clean and erased-group accuracies equal evaluate_embeddings' and
    occlusion_pack's."""
    from fse_plugin.backbone import iresnet_tiny
    from fse_plugin.evaluation import (EmbedSettings, OcclusionSettings, embed, evaluate_embeddings,
                                       occlusion_pack)
    from fse_plugin.study.probes import build_probes, probe_distances, scores
    torch.manual_seed(0)
    model = iresnet_tiny().eval()
    images, issame, masks = pack
    probes = build_probes(images, issame, masks, ["upper_face", "hat"], single_regions=False)
    # the benchmark's batch: the same bits
    got = scores(probe_distances(model, probes, batch_size=64), issame)
    assert set(got) == {"clean", "occluder:hat", "erased:upper_face", "drop:occluder:hat",
                        "drop:erased:upper_face"}
    quiet = EmbedSettings(progress=False)
    assert got["clean"] == evaluate_embeddings(embed(model, images, quiet), issame).accuracy * 100
    upper = occlusion_pack({"m": model}, images, issame, masks,
                           OcclusionSettings(probes.groups, embed=quiet)).rows[0]
    assert upper.region == "upper_face" and got["erased:upper_face"] == upper.score["m"]


def test_the_surgical_mask_had_another_name(pack):
    from fse_plugin.study.probes import build_probes, check_probes
    with pytest.warns(DeprecationWarning, match="'mask' is deprecated; use 'surgical_mask'"):
        assert check_probes(["mask", "upper_face"]) == ["surgical_mask", "upper_face"]
    with pytest.raises(FSEError, match="--probes: unknown probe 'scarf'; choose from sunglasses, "
                                       "surgical_mask"):
        check_probes(["scarf"])
    with pytest.raises(FSEError, match="given more than once"):
        check_probes(["hat", "hat"])
    images, issame, masks = pack
    new = build_probes(images, issame, masks, ["surgical_mask"]).occluded
    with pytest.warns(DeprecationWarning):
        old = build_probes(images, issame, masks, ["mask"]).occluded
    assert np.array_equal(new["surgical_mask"], old["surgical_mask"])


# --------------------------------------------------------------------------------------------- runs


def test_one_run_repeats_bit_for_bit(synth_rec, synth_cache, pack, tmp_path):
    """Train + score of a variant twice with one seed: identical distances (rectangle erasing
    included)."""
    from fse_plugin.experiment import RecognizerSettings
    from fse_plugin.study.builtin import BuiltinTrainer
    from fse_plugin.study.probes import build_probes, probe_distances
    probes = build_probes(*pack, ["sunglasses", "surgical_mask", "eyes+brows"])
    trainer = BuiltinTrainer(synth_rec, synth_cache, RecognizerSettings(3, 16, num_workers=0),
                             progress=False)
    for variant in parse_variants(["off", "random_erasing", "fse:p=1.0"])[1:]:
        runs = [trainer(variant, 3, tmp_path / f"{variant.slug}{i}") for i in range(2)]
        got = [probe_distances(trainer.load(r["weights"]), probes) for r in runs]
        assert set(got[0]) == {"clean", "occluder:sunglasses", "occluder:surgical_mask",
                               "erased:eyes+brows"}
        assert all(np.array_equal(got[0][k], got[1][k]) for k in got[0]), variant.name
        assert runs[0]["missing_masks"] == 0 and runs[0]["steps"] == 3


def test_a_finished_run_is_reused_when_the_settings_match(tmp_path, monkeypatch):
    import fse_plugin.study.run as run_mod
    from fse_plugin.study.probes import ProbeSet
    calls = []

    class Fake:
        def __call__(self, variant, seed, run_dir):
            calls.append(seed)
            return {"weights": "w"}

        def load(self, weights):
            return None

    issame = np.arange(20) % 2 == 0
    dist = {"clean": np.where(issame, 1.0, 3.0), "occluder:hat": np.linspace(0, 4, 20)}
    monkeypatch.setattr(run_mod, "probe_distances", lambda model, probes, device: dist)
    variant, probes = parse_variants(["off"])[0], ProbeSet(np.zeros(1), issame, np.zeros(1), [])
    first = run_mod._run_one(Fake(), variant, 0, probes, tmp_path, {"a": 1}, "cpu")
    again = run_mod._run_one(Fake(), variant, 0, probes, tmp_path, {"a": 1}, "cpu")
    (tmp_path / "distances.npz").unlink()  # an unfinished run is run again
    gone = run_mod._run_one(Fake(), variant, 0, probes, tmp_path, {"a": 1}, "cpu")
    other = run_mod._run_one(Fake(), variant, 0, probes, tmp_path, {"a": 2}, "cpu")
    assert calls == [0, 0, 0] and first.scores == again.scores == gone.scores == other.scores
    assert (first.scores["clean"] == 100.0
            and first.scores["drop:occluder:hat"] == 100.0 - first.scores["occluder:hat"])
    assert np.array_equal(again.distances["occluder:hat"], dist["occluder:hat"])


# ---------------------------------------------------------------------------------- arcface trainer


def test_arcface_trainer_refuses_without_cuda_before_any_work(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    out = tmp_path / "s"
    assert main(["study", "--trainer", "arcface", "--out", str(out), "--quiet"]) == 2
    assert "needs CUDA" in capsys.readouterr().err
    assert not out.exists()


def _harness(cmd, cwd, env):
    """train_v2.py through tests/arcface_harness.py (one process; CPU stand-ins where there is no
    CUDA)."""
    env = {k: v for k, v in env.items()
           if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_PORT")}
    done = subprocess.run([sys.executable, str(HARNESS), str(cwd), cmd[-1]], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]


@pytest.fixture(scope="module")
def small_rec(tmp_path_factory):
    """8 identities x 3 faces with their ground-truth mask cache, and a 10-pair pack with its
    masks."""
    from fse_plugin import maskcache, synth
    root = tmp_path_factory.mktemp("arcface_study")
    rec = synth.write_rec(root / "rec", n_identities=8, images_per_identity=3, seed=3)
    gt = np.load(rec / "gt_masks.npz")
    maskcache.build_from_labels(rec, gt["keys"], gt["masks"], progress=False)
    return rec, synth.write_pairs_bin(root / "val.bin", n_pairs=10, seed=4)


@pytest.mark.timeout(900)  # two train_v2.py processes: minutes on a loaded CPU
def test_study_trains_with_upstream_train_v2(arcface_torch_dir, small_rec, tmp_path):
    """--trainer arcface for real: off and fse, one seed, 3 steps each through upstream's
    train_v2.py (the harness on a CPU, torchrun on CUDA), each model.pt scored, study.json with both
    variants."""
    from fse_plugin.study import ArcfaceSettings, OwnData, StudySettings, StudySizes, run_study
    rec, pack = small_rec
    launch = None if torch.cuda.is_available() else _harness
    settings = StudySettings(
        out=tmp_path / "study", sizes=StudySizes(seeds=1, steps=3, batch_size=8),
        variants=("off", "fse"), probes=(), trainer="arcface",
        device="cuda" if launch is None else "cpu",
        data=OwnData(rec=rec, pack=pack),
        arcface=ArcfaceSettings(arcface_torch_dir, network="mbf", fp16=False, num_workers=0,
                                launch=launch))
    report = run_study(settings, progress=False)
    facts = json.loads((report.parent / "study.json").read_text())
    assert list(facts["variants"]) == ["off", "fse"] and facts["metrics"] == ["clean"]
    for name, config in (("off", None),
                         ("fse", {"masks": str((rec / "fse_masks").resolve()), "p": 0.5})):
        run_dir = report.parent / "runs" / f"{name}_s0"
        # upstream wrote them
        assert (run_dir / "model.pt").is_file() and (run_dir / "training.log").is_file()
        cfg = (report.parent / "arcface_torch" / "configs" / f"study_{name}_s0.py").read_text()
        assert ("config.fse = dict(" in cfg) == (config is not None)
        (run,) = [r for r in facts["runs"] if r["variant"] == name]
        assert (run["train"]["epochs"] == 1 and run["train"]["steps"] == 3
                and 0 <= run["scores"]["clean"] <= 100)
    assert "FSErasing(p=0.5" in (report.parent / "runs" / "fse_s0" / "training.log").read_text()


def test_arcface_trainer_writes_a_config_upstream_reads(arcface_torch_dir, synth_rec, synth_cache,
                                                        tmp_path):
    """A patched copy of the tree, one config per run that upstream's get_config loads, the torchrun
    command."""
    from fse_plugin.study import ArcfaceSettings
    from fse_plugin.study.arcface import ArcfaceTrainer
    launched = []

    def launch(cmd, cwd, env):
        probe = ("from utils.utils_config import get_config; import json; c = get_config(%r); "
                 "print(json.dumps({k: c[k] for k in ('network', 'num_epoch', 'seed', 'rec', "
                 "'output')} | {'fse': c.get('fse')}))" % cmd[-1])
        done = subprocess.run([sys.executable, "-c", probe], cwd=cwd, env=env, capture_output=True,
                              text=True)
        assert done.returncode == 0, done.stderr
        cfg = json.loads(done.stdout)
        Path(cfg["output"], "model.pt").write_bytes(b"x")
        launched.append((cmd, cwd, cfg))

    trainer = ArcfaceTrainer(ArcfaceSettings(arcface_torch_dir, launch=launch), tmp_path, synth_rec,
                             synth_cache, steps=10, batch_size=16)
    trainer.prepare()
    # a patched copy; the original untouched
    assert "FSEMXFaceDataset" in (trainer.tree / "dataset.py").read_text()
    assert "FSEMXFaceDataset" not in (arcface_torch_dir / "dataset.py").read_text()
    off, fse = parse_variants(["off", "fse"])
    r_off = trainer(off, 0, tmp_path / "off")
    r_fse = trainer(fse, 1, tmp_path / "fse")
    (cmd, cwd, cfg_off), (_, _, cfg_fse) = launched
    assert (cmd[-3:] == ["--nproc_per_node=1", "train_v2.py", "configs/study_off_s0"]
            and cwd == trainer.tree)
    assert cfg_off["fse"] is None and cfg_off["network"] == "r18" and cfg_off["seed"] == 0
    assert (cfg_fse["fse"] == {"masks": str(synth_cache.resolve()), "p": 0.5}
            and cfg_fse["seed"] == 1)
    assert cfg_off["num_epoch"] == math.ceil(10 / (72 // 16)) == r_off["epochs"]
    assert r_fse["weights"].endswith("model.pt")


# --------------------------------------------------------------------------------------- end to end


QUICK = ["study", "--quick", "--quiet", "--variants", "off", "fse", "random_erasing", "--probes",
         "all"]


@pytest.fixture(scope="module")
def quick_study(tmp_path_factory):
    out = tmp_path_factory.mktemp("study") / "study"
    assert main([*QUICK, "--out", str(out)]) == 0
    return out


# the module's quick study is made in this test's setup: minutes on a loaded CPU
@pytest.mark.timeout(900)
def test_study_quick_end_to_end(quick_study):
    out = quick_study
    facts = json.loads((out / "study.json").read_text())
    variants = ["off", "fse", "random_erasing"]
    assert list(facts["variants"]) == variants and facts["config"]["masks"] == "parser"
    assert facts["seeds"] == [0, 1, 2] and len(facts["runs"]) == 9 and facts["config"]["repeatable"]
    metrics = facts["metrics"]
    assert {"clean", "occluder:sunglasses", "occluder:surgical_mask", "occluder:hat",
            "occluder:hand",
            "erased:upper_face", "erased:lower_face", "drop:occluder:surgical_mask",
            "drop:erased:upper_face"} <= set(metrics)
    report = (out / "report.md").read_text()
    for v in variants:
        for m in metrics:
            entry = facts["variants"][v][m]
            assert len(entry["ci95"]) == 2 and entry["ci95"][0] <= entry["mean"] <= entry["ci95"][1]
            assert entry["mean"] == pytest.approx(np.mean(entry["values"]))
    for v in variants[1:]:
        for m in metrics:
            d = facts["differences"][v][m]
            expected = np.subtract(facts["variants"][v][m]["values"],
                                   facts["variants"]["off"][m]["values"])
            assert (d["values"] == pytest.approx(expected)
                    and d["mean"] == pytest.approx(expected.mean()))
            lo, hi = (math.nan if x is None else x for x in d["ci95"])
            assert d["outcome"] == judge(d["mean"], lo, hi,
                                         higher_is_better=not m.startswith("drop:"))
            s = d["sensitivity"]
            assert (s["sd_seeds"] == pytest.approx(np.std(expected, ddof=1), abs=1e-5)
                    and s["pairs"] == 32)
            assert s["sd_training"] == pytest.approx(
                math.sqrt(max(0, s["sd_seeds"] ** 2 - s["sd_pairs"] ** 2)), abs=1e-5)
            assert s["detectable_80"] == pytest.approx(detectable_effect(s["sd_seeds"], 3),
                                                       abs=1e-5)
            if m == "clean" or m.startswith("drop:"):
                assert d["sentence"] in report
    # after the title and the parser warning: what the study can see
    first = report.split("\n\n")[2]
    clean = facts["differences"]["fse"]["clean"]["sensitivity"]
    assert first.count("What this study can see: with 3 seeds and 32 pairs") == 1
    assert f"**{clean['detectable_80']:.2f} points in clean accuracy and" in first
    judged = [facts["differences"][v][m]["outcome"] for v in variants[1:] for m in metrics
              if m == "clean" or m.startswith("drop:")]
    crossed = sum(o in ("better", "worse") for o in judged)
    assert (f"{len(judged)} comparisons are judged below" in report
            and f"and {crossed} did." in report)
    # the quick parser is far below the floor: the report says so first
    assert facts["warning"] and report.splitlines()[2].startswith("> **WARNING: the parser")
    for name in ("table.md", "accuracy.png", "differences.png", "runs/fse_s2/model.pt",
                 "runs/off_s0/scores.json", "runs/off_s0/distances.npz", "inputs.json"):
        assert (out / name).is_file(), name
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name]


def _figures(facts):
    return {k: facts[k] for k in ("variants", "differences", "parser", "warning")} | {
        "runs": [{k: r[k] for k in ("variant", "seed", "scores")}
                 | {"loss": r["train"]["final_loss"]}
                 for r in facts["runs"]]}


@pytest.mark.timeout(900)
def test_the_quick_study_repeats_its_figures(quick_study, tmp_path):
    """A second study with the same seeds in another folder: the same figures in study.json."""
    out = tmp_path / "again"
    assert main([*QUICK, "--out", str(out)]) == 0
    first, second = (json.loads((d / "study.json").read_text()) for d in (quick_study, out))
    assert _figures(first) == _figures(second)


@pytest.mark.timeout(900)
def test_a_study_started_again_reuses_what_it_has(quick_study, tmp_path, monkeypatch):
    """More seeds in the same folder: inputs and the finished runs are reused, only the new seed
    trains."""
    import shutil

    import fse_plugin.study.run as run_mod
    from fse_plugin.study.builtin import BuiltinTrainer
    out = tmp_path / "resumed"
    shutil.copytree(quick_study, out)
    trained, train = [], BuiltinTrainer.__call__

    def counting(self, variant, seed, run_dir):
        trained.append((variant.name, seed))
        return train(self, variant, seed, run_dir)
    monkeypatch.setattr(BuiltinTrainer, "__call__", counting)
    monkeypatch.setattr(run_mod.make, "synthesise", lambda *a,
                        **k: pytest.fail("inputs synthesised again"))
    # off and fse only
    assert main([*QUICK[:3], "--probes", "all", "--seeds", "4", "--out", str(out)]) == 0
    assert sorted(trained) == [("fse", 3), ("off", 3)]
    facts = json.loads((out / "study.json").read_text())
    assert (facts["seeds"] == [0, 1, 2, 3]
            and os.path.isfile(out / "runs" / "off_s3" / "scores.json"))


def test_an_interrupted_study_is_one_line_and_leaves_complete_runs_only(tmp_path, monkeypatch):
    """Ctrl-C in the second run: exit 130, one line; the first run finished, the second left no
    scores and no report; started again, the study trains only what was missing."""
    import fse_plugin.study.run as run_mod
    from badinput import run_fse
    from fse_plugin.study.builtin import BuiltinTrainer
    out, distances, trained = tmp_path / "s", run_mod.probe_distances, []

    def interrupted(model, probes, device):
        if len(trained) == 2:
            raise KeyboardInterrupt
        return distances(model, probes, device)
    train = BuiltinTrainer.__call__

    def counting(self, variant, seed, run_dir):
        trained.append(variant.name)
        return train(self, variant, seed, run_dir)
    monkeypatch.setattr(BuiltinTrainer, "__call__", counting)
    monkeypatch.setattr(run_mod, "probe_distances", interrupted)
    argv = ["study", "--quick", "--masks", "gt", "--seeds", "1", "--variants", "off", "fse",
            "--probes", "none", "--quiet", "--out", out]
    result = run_fse(argv)
    assert (result.rc == 130 and result.lines[-1] == "fse study: interrupted"
            and "Traceback" not in result.err)
    runs = out / "runs"
    assert ((runs / "off_s0" / "scores.json").is_file()
            and not (runs / "fse_s0" / "scores.json").exists())
    assert not (out / "report.md").exists() and not [p for p in out.rglob("*") if ".tmp-" in p.name]
    monkeypatch.setattr(run_mod, "probe_distances", distances)
    assert (run_fse(argv).rc == 0 and trained == ["off", "fse", "fse"]
            and (out / "report.md").is_file())


def test_the_default_study_is_the_measured_one():
    """What `fse study` runs without flags: the configuration benchmarks/README.md measured and
    sized."""
    from fse_plugin.cli import build_parser
    from fse_plugin.cli.study import settings_from
    from fse_plugin.study import DEFAULT
    settings = settings_from(build_parser().parse_args(["study"]))
    assert (settings.variants == ("off", "fse") and settings.probes == ("upper_face",)
            and settings.masks is None)
    assert settings.sizes == DEFAULT
    assert (DEFAULT.seeds, DEFAULT.steps, DEFAULT.pairs, DEFAULT.width) == (8, 100, 3000, 8)
    assert settings_from(build_parser().parse_args(["study", "--probes", "all"])).probes == (
        "sunglasses", "surgical_mask", "hat", "hand", "eyes+brows", "upper_face", "lower_face")
