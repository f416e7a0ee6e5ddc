"""`fse demo --quick`: every stage runs end to end, the report shows each, and a second run repeats
the scores."""
import json
import math

import pytest
import torch

from fse_plugin.cli import main


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "demo"
    assert main(["demo", "--quick", "--quiet", "--out", str(out)]) == 0
    return out


def test_demo_quick_runs_the_whole_pipeline(quick_demo):
    out = quick_demo
    report = (out / "report.md").read_text()
    for heading in ("## Verification", "## FSErasing samples", "## Parser", "## Semantic-occlusion",
                    "## FS-CAM"):
        assert heading in report
    facts = json.loads((out / "demo.json").read_text())
    assert set(facts["recognizers"]) == {"baseline", "fserasing"}
    assert facts["recognizers"]["fserasing"]["missing_masks"] == 0
    assert all(r["steps"] == facts["sizes"]["recognizer_steps"]
               for r in facts["recognizers"].values())
    assert facts["parser"]["epochs"] == facts["sizes"]["parser_epochs"] and facts["repeatable"]
    for name in ("erased_samples.png", "parser_vs_truth.png", "roc.png", "occlusion/occlusion.png",
                 "occlusion/occlusion.csv", "fscam/region_scores.csv", "models/baseline.pt",
                 "models/fserasing.pt", "rec/fse_masks/manifest.json"):
        assert (out / name).is_file(), name
    # the report links only files that exist
    for line in report.splitlines():
        if line.startswith("!["):
            assert (out / line[line.index("(") + 1:-1]).is_file(), line
    # two epochs of 100 frames make a useless parser: the report says so at the top, the verdict is
    # in the text
    quality = facts["parser_quality"]
    assert not quality["reliable"] and quality["val_mean_f1"] < quality["floor"]
    assert report.splitlines()[2].startswith("> **WARNING: the parser's validation mean F1")
    assert facts["clean_verdict"]["sentence"] in report
    # what the scores depend on besides code and seed, and nothing half-written left behind
    assert facts["machine"]["cpu"] and facts["machine"]["torch_threads"] == facts["torch_threads"]
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name]


def test_demo_repeats_its_scores_bit_for_bit(quick_demo, tmp_path):
    """Counted budgets: a second run with the same seed (and thread count) gives the same demo.json
    scores."""
    out = tmp_path / "again"
    assert main(["demo", "--quick", "--quiet", "--out", str(out)]) == 0
    first, second = (json.loads((d / "demo.json").read_text()) for d in (quick_demo, out))
    for key in ("parser_quality", "parser_on_rec", "verification", "occlusion", "clean_verdict"):
        assert first[key] == second[key], key
    for name in ("baseline", "fserasing"):
        assert first["recognizers"][name]["final_loss"] == second["recognizers"][name]["final_loss"]
    a, b = (torch.load(d / "models" / "fserasing.pt", weights_only=True) for d in (quick_demo, out))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_recognizer_counted_in_steps_repeats_bit_for_bit(synth_rec, synth_cache, tmp_path):
    """A step budget makes the demo's training reproducible (a time budget cannot be); erasing
    on."""
    from fse_plugin.experiment import RecognizerSettings, train_recognizer

    settings = RecognizerSettings(3, 16, seed=5)
    runs = [train_recognizer(synth_rec, tmp_path / f"m{i}.pt", settings,
                             fse=dict(masks=str(synth_cache), p=1.0),
                             progress=False) for i in range(2)]
    assert [r["steps"] for r in runs] == [3, 3] and not any(r["stopped_by_time"] for r in runs)
    a, b = (torch.load(r["weights"], weights_only=True) for r in runs)
    assert all(torch.equal(a[k], b[k]) for k in a)
    other = train_recognizer(synth_rec, tmp_path / "m2.pt", settings, progress=False)
    c = torch.load(other["weights"], weights_only=True)
    assert not all(torch.equal(a[k], c[k]) for k in a)  # erasing changed what was learnt


def test_a_safety_stop_is_reported(synth_rec, tmp_path):
    from fse_plugin.experiment import RecognizerSettings, train_recognizer
    run = train_recognizer(synth_rec, tmp_path / "m.pt",
                           RecognizerSettings(50, 16, max_seconds=1e-9, num_workers=0),
                           progress=False)
    assert run["stopped_by_time"] and run["steps"] < run["steps_asked"] == 50


def test_parser_quality_floor_warns_below_it_only():
    from fse_plugin.experiment import PARSER_FLOOR, parser_warning
    assert parser_warning({"val_mf1": 0.85}) is None
    low = parser_warning({"val_mf1": 0.204})
    assert "0.204" in low and str(PARSER_FLOOR) in low and "not meaningful" in low
    assert "was not measured" in parser_warning({})


def test_clean_verdict_never_calls_a_tie_a_gain():
    """The issue's run: 0.9466666666666665 against 0.9466666666666667 was reported as an
    improvement."""
    from types import SimpleNamespace

    from fse_plugin.demo.report import clean_verdict
    base = SimpleNamespace(fold_accuracy=[0.95, 0.9333333333333333, 0.9666666666666667] * 3
                           + [0.9166666666666666])
    fse = SimpleNamespace(fold_accuracy=[0.9333333333333333, 0.95, 0.9666666666666667] * 3
                          + [0.9166666666666667])
    v = clean_verdict(base, fse)
    assert v["outcome"] == "tie" and "improved" not in v["sentence"] and "tied" in v["sentence"]
    better = clean_verdict(base,
                           SimpleNamespace(fold_accuracy=[a + 0.02 for a in base.fold_accuracy]))
    assert (better["outcome"] == "better"
            and "**FSErasing improved clean verification accuracy**" in better["sentence"])
    assert math.isclose(better["difference"]["mean"], 2.0)
