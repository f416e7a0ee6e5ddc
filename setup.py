import glob

from setuptools import find_packages, setup

setup(
    name="fse_plugin",
    version="0.3.0",
    description="FSErasing and FS-CAM for face recognition, as a plugin for insightface arcface_torch",
    packages=find_packages(include=["fse_plugin", "fse_plugin.*"]),
    data_files=[("share/fse_plugin/patches", sorted(glob.glob("patches/*.patch")))],
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.1",
        "torchvision>=0.16",
        "numpy>=1.23",
        "opencv-python-headless>=4.8",
        "tqdm>=4.60",
        "tensorboard>=2.14",
        "matplotlib>=3.7",
        "scikit-learn>=1.3",
        "scipy>=1.10",
        "grad-cam>=1.5.4",
        "easydict>=1.10",
        "scikit-image>=0.26",  # IJB alignment exactly as eval_ijbc.py aligns (SimilarityTransform.from_estimate)
    ],
    extras_require={
        "dev": ["pytest>=7.4", "pytest-timeout>=2.2", "ruff>=0.6"],
        "mxnet": ["mxnet==1.9.1", "numpy<1.24"],
        "arcface": ["pandas>=2.0", "prettytable>=3.0"],  # what upstream's eval_ijbc.py imports beyond the above
    },
    entry_points={"console_scripts": ["fse = fse_plugin.cli:main"]},
)
