"""A stand-in arcface_torch tree for tests: ``backbones.get_model`` knows one cheap network (pool,
linear)."""
import textwrap
from pathlib import Path

BACKBONES = textwrap.dedent("""
    import warnings

    import torch

    class Net(torch.nn.Module):
        def __init__(self, num_features):
            super().__init__()
            self.fc = torch.nn.Linear(3 * 28 * 28, num_features)

        def forward(self, x):
            if {warn}:  # as upstream's iresnet warns about torch.cuda.amp.autocast at every forward
                warnings.warn("fake upstream deprecation", FutureWarning)
            return self.fc(torch.nn.functional.avg_pool2d(x, 4).flatten(1))

    def get_model(name, **kwargs):
        if name != "{name}":
            raise ValueError()
        return Net(kwargs.get("num_features", 512))
""")


def fake_tree(root: Path, name: str = "fake", warn: bool = False) -> Path:
    """An arcface_torch-shaped tree (``backbones/``, ``configs/``) whose get_model builds network
    ``name``."""
    (root / "backbones").mkdir(parents=True)
    (root / "configs").mkdir()
    (root / "backbones" / "__init__.py").write_text(
        BACKBONES.replace("{name}", name).replace("{warn}", str(warn)))
    return root
