"""RISE and Group-CAM as classes importable by name, light imports, and the pictures' colour bar and
legend."""
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from test_cam import PLANTED, layout

from fse_plugin import cam
from fse_plugin.common import FSEError
from fse_plugin.labels import CLASSES

REPO = Path(__file__).resolve().parents[1]


def test_group_cam_is_a_base_cam_importable_by_name():
    from pytorch_grad_cam.base_cam import BaseCAM

    from fse_plugin.cam.group_cam import GroupCAM
    assert cam.GroupCAM is GroupCAM and issubclass(GroupCAM, BaseCAM)
    assert pickle.loads(pickle.dumps(GroupCAM)) is GroupCAM
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(5))
    net(torch.zeros(1, 3, 8, 8))
    made = cam.make_pixel_cam("groupcam", net, "0", groups=4)
    with made as g:
        assert isinstance(g, GroupCAM) and repr(g) == "GroupCAM(groups=4, blur=(51, 50), percentile=70)"
        # the library's own class targets work too
        maps = g(input_tensor=torch.randn(2, 3, 8, 8), targets=None)
    assert maps.shape == (2, 8, 8)
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        cam.Nope


def test_rise_is_called_like_a_library_cam():
    from fse_plugin.cam.rise import RISE
    assert pickle.loads(pickle.dumps(RISE)) is RISE
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 4))
    with cam.make_pixel_cam("rise", net, n_masks=16, s=2, batch_size=8) as r:
        assert repr(r) == "RISE(n_masks=16, s=2, p1=0.1)"
        maps = r(torch.randn(3, 3, 8, 8), None)
    assert maps.shape == (3, 8, 8) and maps.min() >= 0 and maps.max() <= 1
    with pytest.raises(FSEError, match="RISE p1: must be > 0 and <= 1, got 0"):
        RISE(net, p1=0)


def test_import_stays_light_and_evaluation_does_not_import_cam():
    code = ("import sys, fse_plugin.evaluation; assert 'fse_plugin.cam' not in sys.modules; "
            "import fse_plugin.cam; print(sorted(m for m in ('pytorch_grad_cam', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


def test_overlay_grid_has_colour_bar_and_region_legend():
    masks = layout()[None].repeat(2, 1, 1).numpy()
    images = np.zeros((2, *masks.shape[1:], 3), np.uint8)
    maps = {"fscam": np.random.default_rng(0).random(masks.shape).astype(np.float32)}
    fig = cam.overlay_grid_figure(images, masks, maps, ["a", "b"])
    bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert len(bars) == 1 and bars[0].get_ylim() == (0.0, 1.0)
    present = sorted(set(np.unique(masks).tolist()) - {cam.IGNORE})
    assert [t.get_text() for t in fig.legends[0].get_texts()] == [CLASSES[k] for k in present]
    assert CLASSES[PLANTED] in [t.get_text() for t in fig.legends[0].get_texts()]
    from matplotlib import pyplot as plt
    plt.close(fig)
