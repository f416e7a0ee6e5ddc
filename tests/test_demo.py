"""`fse demo --quick`: every stage of the pipeline runs end to end and the report shows each."""
import json

from fse_plugin.cli import main


def test_demo_quick_runs_the_whole_pipeline(tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--quiet", "--out", str(out)]) == 0
    report = (out / "report.md").read_text()
    for heading in ("## Verification", "## FSErasing samples", "## Parser", "## Semantic-occlusion", "## FS-CAM"):
        assert heading in report
    facts = json.loads((out / "demo.json").read_text())
    assert set(facts["recognizers"]) == {"baseline", "fserasing"}
    assert facts["recognizers"]["fserasing"]["missing_masks"] == 0
    assert all(r["steps"] > 0 for r in facts["recognizers"].values())
    for name in ("erased_samples.png", "parser_vs_truth.png", "roc.png", "occlusion/occlusion.png",
                 "occlusion/occlusion.csv", "fscam/region_scores.csv", "models/baseline.pt", "models/fserasing.pt",
                 "rec/fse_masks/manifest.json"):
        assert (out / name).is_file(), name
    # the report links only files that exist
    for line in report.splitlines():
        if line.startswith("!["):
            assert (out / line[line.index("(") + 1:-1]).is_file(), line


def test_recognizer_counted_in_steps_repeats_bit_for_bit(synth_rec, synth_cache, tmp_path):
    """A step budget makes the demo's training reproducible (a time budget cannot be); erasing on."""
    import torch

    from fse_plugin.demo import train_recognizer

    runs = [train_recognizer(synth_rec, tmp_path / f"m{i}.pt", dict(masks=str(synth_cache), p=1.0), steps=3, seed=5,
                             batch_size=16, progress=False) for i in range(2)]
    assert [r["steps"] for r in runs] == [3, 3]
    a, b = (torch.load(r["weights"], weights_only=True) for r in runs)
    assert all(torch.equal(a[k], b[k]) for k in a)
    other = train_recognizer(synth_rec, tmp_path / "m2.pt", None, steps=3, seed=5, batch_size=16, progress=False)
    c = torch.load(other["weights"], weights_only=True)
    assert not all(torch.equal(a[k], c[k]) for k in a)  # erasing changed what was learnt
