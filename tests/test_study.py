"""`fse study`: statistics, verdict wording, variants, one run's determinism and the quick study end to end."""
import json
import math
import subprocess
import sys

import numpy as np
import pytest

from fse_plugin.cli import main
from fse_plugin.common import FSEError
from fse_plugin.study import mean_ci, paired_difference, parse_variants, sign_flip_p
from fse_plugin.study.verdict import OUTCOMES, judge, verdict

# ------------------------------------------------------------------------------------------------ statistics


def test_mean_ci_is_the_student_t_interval():
    iv = mean_ci([1.0, 2.0, 3.0])
    u = 0.975  # t quantile with 2 degrees of freedom in closed form: (2u - 1) / sqrt(2u(1 - u))
    half = (2 * u - 1) / math.sqrt(2 * u * (1 - u)) * 1.0 / math.sqrt(3)
    assert (iv.mean, iv.std, iv.n) == (2.0, 1.0, 3)
    assert iv.lo == pytest.approx(2 - half, abs=1e-12) and iv.hi == pytest.approx(2 + half, abs=1e-12)
    one = mean_ci([5.0])
    assert one.mean == 5.0 and math.isnan(one.lo) and one.to_json()["ci95"] == [None, None]


def test_paired_difference_t_test_and_sign_flip():
    d = paired_difference([1, 2, 3, 4], [0, 0, 1, 1])  # differences 1, 2, 2, 3
    t = 2 / (math.sqrt(2 / 3) / 2)  # mean / (sd / sqrt(n))
    cdf = 0.5 + (math.atan(t / math.sqrt(3)) + (t / math.sqrt(3)) / (1 + t * t / 3)) / math.pi  # Student t, 3 df
    assert d.values == (1, 2, 2, 3) and d.mean == 2 and d.n == 4
    assert d.t_test_p == pytest.approx(2 * (1 - cdf), rel=1e-9)
    assert d.sign_flip_p == 2 / 16  # only all-plus and all-minus reach |mean| 2
    assert d.lo > 0
    assert sign_flip_p([3, 1, 1]) == 2 / 8 and sign_flip_p([1, -1]) == 1.0
    assert paired_difference([1, 1], [0, 0]).t_test_p == 0.0  # no spread, non-zero: certain
    tie = paired_difference([1, 1], [1, 1])
    assert tie.t_test_p == 1.0 and tie.mean == 0.0
    with pytest.raises(ValueError, match="equal lengths"):
        paired_difference([1, 2], [1])


# ------------------------------------------------------------------------------------------------ verdict


def test_judge_follows_rounding_and_the_interval():
    # the case: two accuracies equal to the last printed digit are a tie, never an improvement
    assert judge((0.9466666666666667 - 0.9466666666666665) * 100, -1.0, 1.0) == "tie"
    assert judge(0.004, 0.001, 0.007) == "tie"  # +0.00 as printed
    assert judge(1.0, 0.2, 1.8) == "better" and judge(-1.0, -1.8, -0.2) == "worse"
    assert judge(1.0, -0.2, 2.2) == "within_noise"
    assert judge(0.5, 0.004, 1.0) == "within_noise"  # the interval's bound prints as 0.00
    assert judge(1.0, math.nan, math.nan) == "no_estimate"
    assert judge(-1.0, -1.8, -0.2, higher_is_better=False) == "better"


@pytest.mark.parametrize("diff,lo,hi", [(1.0, 0.2, 1.8), (-1.0, -1.8, -0.2), (1e-16, -1, 1), (1.0, -0.2, 2.2),
                                        (3.0, math.nan, math.nan)])
@pytest.mark.parametrize("higher", [True, False])
def test_verdict_words_match_the_outcome(diff, lo, hi, higher):
    v = verdict("A", "B", "the metric", diff, lo, hi, tests="t-test p=0.1", higher_is_better=higher)
    assert v.outcome in OUTCOMES
    good = {"better": "improved" if higher else "reduced", "worse": "lowered" if higher else "increased"}
    for outcome, word in good.items():
        assert (f"**A {word} the metric**" in v.sentence) == (v.outcome == outcome)
    assert ("improved" in v.sentence) == (v.outcome == "better" and higher)
    assert ("tied" in v.sentence) == (v.outcome == "tie")
    assert "-0.00" not in v.sentence


# ------------------------------------------------------------------------------------------------ variants


def test_variants_parse_check_and_put_off_first():
    from torchvision.transforms import RandomErasing
    vs = parse_variants(["fse", "random_erasing", "off", "fse:p=1.0,n_erase=(1, 3)"])
    assert [v.name for v in vs] == ["off", "fse", "random_erasing", "fse:p=1.0,n_erase=(1, 3)"]
    assert vs[1].fse_config("/c") == {"masks": "/c", "p": 0.5} and vs[0].fse_config("/c") is None
    assert vs[3].fse == {"p": 1.0, "n_erase": (1, 3)} and vs[3].slug == "fse_p_1_0_n_erase_1_3"
    re = vs[2].transform()
    assert isinstance(re, RandomErasing) and (re.p, re.scale, re.ratio, re.value) == (0.5, (0.02, 0.33), (0.3, 3.3), 0)
    for specs, message in ((["fse"], "must include 'off'"), (["off", "off"], "given twice"),
                           (["off", "fse:q=1"], "unknown key"), (["off", "fse:p=2"], "config.fse.p"),
                           (["off", "cutout"], "unknown variant"), (["off", "random_erasing:size=3"], "'size'"),
                           (["off", "fse:fill=random_mix"], "Python literal")):
        with pytest.raises(FSEError, match=message):
            parse_variants(specs)


# ------------------------------------------------------------------------------------------------ runs


def test_one_run_repeats_bit_for_bit(synth_rec, synth_cache, synth_bin, tmp_path):
    """Train + score of a variant twice with one seed: identical scores (rectangle erasing included)."""
    from fse_plugin.study.probes import add_drops, build_probes, score_model
    from fse_plugin.study.recognizer import BuiltinTrainer
    probes = build_probes(synth_bin, occluders=("sunglasses", "mask"))
    trainer = BuiltinTrainer(synth_rec, synth_cache, steps=3, batch_size=16, num_workers=0, progress=False)
    for variant in parse_variants(["off", "random_erasing", "fse:p=1.0"])[1:]:
        runs = [trainer(variant, 3, tmp_path / f"{variant.slug}{i}") for i in range(2)]
        got = [add_drops(score_model(trainer.load(r["weights"]), probes)) for r in runs]
        assert got[0] == got[1], variant.name
        probes_ = {"occluder:sunglasses", "occluder:mask", "erased:eyes+brows", "erased:upper_face",
                   "erased:lower_face"}
        assert set(got[0]) == {"clean"} | probes_ | {f"drop:{k}" for k in probes_}
        assert runs[0]["missing_masks"] == 0 and runs[0]["steps"] == 3


def test_a_finished_run_is_reused_when_the_settings_match(tmp_path):
    from fse_plugin.study.run import _run_one
    from fse_plugin.study.probes import ProbeSet

    calls = []

    class Fake:
        def __call__(self, variant, seed, run_dir):
            calls.append(seed)
            return {"weights": "w"}

        def load(self, weights):
            return None

    import fse_plugin.study.run as run_mod
    real = run_mod.score_model
    run_mod.score_model = lambda model, probes, device: {"clean": 90.0, "occluder:hat": 80.0}
    try:
        variant = parse_variants(["off"])[0]
        probes = ProbeSet(np.zeros(1), np.zeros(1), np.zeros(1), [])
        first = _run_one(Fake(), variant, 0, probes, tmp_path, {"a": 1}, "cpu")
        again = _run_one(Fake(), variant, 0, probes, tmp_path, {"a": 1}, "cpu")
        other = _run_one(Fake(), variant, 0, probes, tmp_path, {"a": 2}, "cpu")
    finally:
        run_mod.score_model = real
    assert calls == [0, 0] and first.scores == again.scores == other.scores
    assert first.scores["drop:occluder:hat"] == 10.0


def test_arcface_trainer_refuses_without_cuda_before_any_work(tmp_path, capsys):
    out = tmp_path / "s"
    assert main(["study", "--trainer", "arcface", "--out", str(out), "--quiet"]) == 2
    assert "needs CUDA" in capsys.readouterr().err
    assert not (out / "rec").exists()


def test_arcface_trainer_writes_a_config_upstream_reads(arcface_torch_dir, synth_rec, synth_cache, tmp_path):
    """A patched copy of the tree, one config per run that upstream's get_config loads, the torchrun command."""
    from fse_plugin.study.arcface import ArcfaceTrainer, ArcfaceTrainerError
    launched = []

    def launch(cmd, cwd, env):
        launched.append((cmd, cwd))
        config = cmd[-1]
        probe = ("from utils.utils_config import get_config; import json; c = get_config(%r); "
                 "print(json.dumps({k: c[k] for k in ('network', 'num_epoch', 'seed', 'rec', 'output')} | "
                 "{'fse': c.get('fse')}))" % config)
        done = subprocess.run([sys.executable, "-c", probe], cwd=cwd, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        cfg = json.loads(done.stdout)
        (tmp_path / "model.pt").write_bytes(b"")
        import pathlib
        pathlib.Path(cfg["output"], "model.pt").write_bytes(b"x")
        launched[-1] += (cfg,)

    trainer = ArcfaceTrainer(arcface_torch_dir, tmp_path, synth_rec, synth_cache, steps=10, network="r18",
                             batch_size=16, launch=launch)
    trainer.prepare()
    assert "FSEMXFaceDataset" in (trainer.tree / "dataset.py").read_text()  # a patched copy; the original untouched
    assert "FSEMXFaceDataset" not in (arcface_torch_dir / "dataset.py").read_text()
    off, fse, rand = parse_variants(["off", "fse", "random_erasing"])
    r_off = trainer(off, 0, tmp_path / "off")
    r_fse = trainer(fse, 1, tmp_path / "fse")
    (cmd, cwd, cfg_off), (_, _, cfg_fse) = launched
    assert cmd[-3:] == ["--nproc_per_node=1", "train_v2.py", "configs/study_off_s0"] and cwd == trainer.tree
    assert cfg_off["fse"] is None and cfg_off["network"] == "r18" and cfg_off["seed"] == 0
    assert cfg_fse["fse"] == {"masks": str(synth_cache.resolve()), "p": 0.5} and cfg_fse["seed"] == 1
    assert cfg_off["num_epoch"] == math.ceil(10 / (72 // 16)) == r_off["epochs"]
    assert r_fse["weights"].endswith("model.pt")
    with pytest.raises(ArcfaceTrainerError, match="no transform hook"):
        trainer(rand, 0, tmp_path / "re")


# ------------------------------------------------------------------------------------------------ end to end


def test_study_quick_end_to_end(tmp_path):
    out = tmp_path / "study"
    assert main(["study", "--quick", "--quiet", "--out", str(out)]) == 0
    facts = json.loads((out / "study.json").read_text())
    variants = ["off", "fse", "random_erasing"]
    assert list(facts["variants"]) == variants and facts["config"]["masks"] == "parser"
    assert facts["seeds"] == [0, 1, 2] and len(facts["runs"]) == 9 and facts["config"]["repeatable"]
    metrics = facts["metrics"]
    assert {"clean", "occluder:sunglasses", "occluder:mask", "occluder:hat", "occluder:hand", "erased:upper_face",
            "erased:lower_face", "drop:occluder:mask", "drop:erased:upper_face"} <= set(metrics)
    report = (out / "report.md").read_text()
    for v in variants:
        for m in metrics:
            entry = facts["variants"][v][m]
            assert len(entry["ci95"]) == 2 and entry["ci95"][0] <= entry["mean"] <= entry["ci95"][1]
            assert entry["mean"] == pytest.approx(np.mean(entry["values"]))
    for v in variants[1:]:
        for m in metrics:
            d = facts["differences"][v][m]
            expected = np.subtract(facts["variants"][v][m]["values"], facts["variants"]["off"][m]["values"])
            assert d["values"] == pytest.approx(expected) and d["mean"] == pytest.approx(expected.mean())
            lo, hi = (math.nan if x is None else x for x in d["ci95"])
            higher = not m.startswith("drop:")
            assert d["outcome"] == judge(d["mean"], lo, hi, higher_is_better=higher)
            if m == "clean" or m.startswith("drop:"):
                assert d["sentence"] in report
    judged = [facts["differences"][v][m]["outcome"] for v in variants[1:] for m in metrics
              if m == "clean" or m.startswith("drop:")]
    crossed = sum(o in ("better", "worse") for o in judged)
    assert f"{len(judged)} comparisons are judged below" in report and f"and {crossed} did." in report
    # the quick parser is far below the floor: the report says so first
    assert facts["warning"] and report.splitlines()[2].startswith("> **WARNING: the parser")
    for name in ("table.md", "accuracy.png", "differences.png", "runs/fse_s2/model.pt", "runs/off_s0/scores.json"):
        assert (out / name).is_file(), name
