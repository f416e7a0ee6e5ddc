"""Refresh the README's pictures from finished runs:
``python docs/demo/refresh.py DEMO_DIR [STUDY_DIR [LEVERS_DIR]]``.

DEMO_DIR is the output folder of a full ``fse demo`` (default ``fse_demo``), STUDY_DIR of ``fse
study``, LEVERS_DIR of ``benchmarks/study.py`` (its learning curve).
Plots are copied as PNG; the grids of faces become JPEG (quality 90) to keep the repository small.
"""
import shutil
import sys
from pathlib import Path

import cv2

HERE = Path(__file__).resolve().parent
DEMO = {"erased_samples.png": "erased_samples.jpg", "parser_vs_truth.png": "parser_vs_truth.jpg",
        "roc.png": "roc.png", "occlusion/occlusion.png": "occlusion.png",
        "fscam/compare.png": "fscam_compare.png",
        "fscam/overlay_fserasing.png": "fscam_overlay_fserasing.jpg"}
STUDY = {"probes.png": "study_probes.jpg", "accuracy.png": "study_accuracy.png",
         "differences.png": "study_differences.png"}
LEVERS = {"curve.png": "study_curve.png"}


def copy(src_dir: Path, files: dict) -> None:
    for src, dst in files.items():
        if dst.endswith(".jpg"):
            cv2.imwrite(str(HERE / dst), cv2.imread(str(src_dir / src)),
                        [cv2.IMWRITE_JPEG_QUALITY, 90])
        else:
            shutil.copyfile(src_dir / src, HERE / dst)
        print(f"{src_dir / src} -> {HERE / dst}")


if __name__ == "__main__":
    copy(Path(sys.argv[1] if len(sys.argv) > 1 else "fse_demo"), DEMO)
    if len(sys.argv) > 2:
        copy(Path(sys.argv[2]), STUDY)
    if len(sys.argv) > 3:
        copy(Path(sys.argv[3]), LEVERS)
