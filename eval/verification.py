"""LFW-style .bin packs (lfw, cfp_fp, agedb_30, ...): 10-fold Accuracy-Flip, XNorm, VAL@FAR=1e-3.
Example, from the plugin root (inside arcface_torch, eval/verification.py is upstream's: run
`fse eval verification`):

    python eval/verification.py --arcface-dir /path/to/insightface/recognition/arcface_torch --network r50 \\
        --weights work_dirs/ms1mv3_r50/model.pt --data-dir /data/faces_emore --targets lfw,cfp_fp,agedb_30

Same flags as `fse eval verification` (see --help); flags in fse_plugin.cli.evaluate, code in
fse_plugin.evaluation.
"""
import sys

from fse_plugin.cli import main

if __name__ == "__main__":
    sys.exit(main(["eval", "verification", *sys.argv[1:]]))
