"""MXNet RecordIO without mxnet: a drop-in for ``mxnet.recordio`` plus a fast, fork-safe reader.

mxnet 1.9.1 pins numpy < 1.24, so the plugin reads and writes the dmlc-core record format itself,
byte for byte. One module per concern:

* ``chunks``: the dmlc-core chunk layer (``MAGIC``, ``encode_record``, ``RecordIOError``,
  ``RecordFile``: a .rec read by offset);
* ``index``: ``.idx`` parsing into numpy arrays;
* ``mxnet_api``: ``MXRecordIO``, ``MXIndexedRecordIO``, ``IRHeader``, ``pack``, ``unpack``,
  ``pack_img``, ``unpack_img`` with mxnet's names, signatures and bytes;
* ``reader``: ``RecordReader`` (pread, numpy index, validated records) and ``open_rec``;
* ``images``: ``image_size`` from PNG/JPEG headers and ``decode_image`` (RGB, like
  ``mx.image.imdecode``);
* ``layout``: ``image_index``, image record keys and int labels of the insightface, im2rec and
  multilabel layouts from record headers only.

Every name is importable from ``fse_plugin.recordio`` itself (what ``mxcompat`` and the patches
use).
"""
from fse_plugin.recordio.chunks import MAGIC, RecordFile, RecordIOError, encode_record
from fse_plugin.recordio.images import MAX_IMAGE_PIXELS, decode_image, image_size
from fse_plugin.recordio.layout import ImageIndex, image_index
from fse_plugin.recordio.mxnet_api import (IRHeader, MXIndexedRecordIO, MXRecordIO, pack, pack_img,
                                           unpack, unpack_img)
from fse_plugin.recordio.reader import RecordReader, open_rec

__all__ = ["MAGIC", "RecordIOError", "IRHeader", "encode_record", "MXRecordIO", "MXIndexedRecordIO",
           "pack", "unpack", "unpack_img", "pack_img", "RecordFile", "RecordReader", "open_rec",
           "MAX_IMAGE_PIXELS", "image_size", "decode_image", "ImageIndex", "image_index"]
