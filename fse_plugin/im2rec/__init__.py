"""Dataset preparation without mxnet: mxnet 1.9.1's ``tools/im2rec.py`` and arcface_torch's
``scripts/shuffle_rec.py``, writing the same files.

* ``listing``: ``--list`` (the image walk, mxnet's shuffle, chunks and train/val/test splits);
* ``lstfile``: the ``.lst`` format, checked whole before any image is read;
* ``encoding``: one list line -> one record (pass-through, or decode / crop / resize / encode);
* ``workers``: the ordered, bounded process pool; ``output``: the .part pair, its journal and the
  renames that make an interrupted run invisible to readers (and resumable);
* ``packing``: every ``<prefix>*.lst`` -> ``.rec``/``.idx``; ``shuffle``: ``shuffled_<name>``.

``python -m fse_plugin.im2rec`` takes im2rec's command line; ``fse rec list|pack|shuffle`` is the
same in the ``fse`` grammar.
"""
from fse_plugin.im2rec.encoding import PackSettings
from fse_plugin.im2rec.listing import DEFAULT_EXTS, ListFile, ListSettings, list_images, make_lists
from fse_plugin.im2rec.lstfile import check_list
from fse_plugin.im2rec.packing import PackResult, find_lists, pack_lists
from fse_plugin.im2rec.shuffle import ShuffleResult, shuffle_rec, shuffled_dir

__all__ = ["DEFAULT_EXTS", "ListSettings", "ListFile", "list_images", "make_lists", "check_list",
           "PackSettings", "PackResult", "find_lists", "pack_lists", "ShuffleResult", "shuffle_rec",
           "shuffled_dir"]
