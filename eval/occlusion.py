"""Semantic-occlusion benchmark: erase each face region (and groups) in the probe images and report
the drop. Example, from the plugin root (inside arcface_torch, run `fse eval occlusion` with the
same flags):

    python eval/occlusion.py --arcface-dir /path/to/insightface/recognition/arcface_torch --network r50 \\
        --pack lfw.bin --masks lfw.masks.npy --weights base/model.pt --weights2 fse/model.pt

Same flags as `fse eval occlusion` (see --help); flags in fse_plugin.cli.evaluate, code in
fse_plugin.evaluation.
"""
import sys

from fse_plugin.cli import main

if __name__ == "__main__":
    sys.exit(main(["eval", "occlusion", *sys.argv[1:]]))
