"""IJB-B/C 1:1 verification as arcface_torch eval_ijbc.py: TAR@FAR 1e-6..1e-1, ROC plot, scores (.npy).
Example: python eval/ijb.py --root IJB_release/IJBC --target IJBC --network r100 --weights model.pt --out results

Same flags as `fse eval ijb` (see --help); flags in fse_plugin.cli.evaluate, code in fse_plugin.evaluation.
"""
import sys

from fse_plugin.cli import main

if __name__ == "__main__":
    sys.exit(main(["eval", "ijb", *sys.argv[1:]]))
