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
