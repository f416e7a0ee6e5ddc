"""IJB-B/C 1:1 verification as arcface_torch eval_ijbc.py: TAR@FAR 1e-6..1e-1, ROC plot, scores
(.npy). Example, from the plugin root (inside arcface_torch, run `fse eval ijb` with the same
flags):

    python eval/ijb.py --arcface-dir /path/to/insightface/recognition/arcface_torch --network r100 \\
        --weights model.pt --root IJB_release/IJBC --ijb-set IJBC --out results

Same flags as `fse eval ijb` (see --help); flags in fse_plugin.cli.evaluate, code in
fse_plugin.evaluation.
"""
import sys

from fse_plugin.cli import main

if __name__ == "__main__":
    sys.exit(main(["eval", "ijb", *sys.argv[1:]]))
