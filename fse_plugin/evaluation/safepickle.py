"""Unpickling an untrusted verification pack, with what it may build and the memory it may take both
bounded.

A pack is a pickle, and a pickle can run code and ask for memory of its choosing:
``pickle.Unpickler`` sizes its memo table from the index a PUT opcode names, before any object is
built, so a 10-byte file (``PROTO 2, BININT1 0, LONG_BINPUT 400000000, STOP``) takes gigabytes. So
the bytes are first scanned with ``pickletools.genops`` (no object is built): only the opcodes that
build bytes, strings, numbers, lists, tuples, dicts and global lookups may occur, the protocol is at
most 5, and a memo index may be at most the number of memo stores before it (what every pickler
writes). Then a restricted ``pickle.Unpickler`` builds the content: every global is replaced by a
checking wrapper, so no callable of the file's choosing ever runs, and only uint8/bool arrays can be
made. Memory stays a small multiple of the file size.
"""
from __future__ import annotations

import importlib
import io
import pickle
import pickletools
from typing import Any

import numpy as np

from fse_plugin.evaluation.errors import PackError

__all__ = ["load_pack_pickle"]

_OPCODES = frozenset((
    "PROTO", "FRAME", "STOP", "MARK", "POP", "POP_MARK", "DUP",
    "NONE", "NEWTRUE", "NEWFALSE", "INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4",
    "FLOAT", "BINFLOAT",
    "STRING", "BINSTRING", "SHORT_BINSTRING", "BINBYTES", "SHORT_BINBYTES", "BINBYTES8",
    "BYTEARRAY8",
    "UNICODE", "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8",
    "EMPTY_LIST", "APPEND", "APPENDS", "LIST", "EMPTY_TUPLE", "TUPLE", "TUPLE1", "TUPLE2", "TUPLE3",
    "EMPTY_DICT", "DICT", "SETITEM", "SETITEMS", "GLOBAL", "STACK_GLOBAL", "REDUCE", "BUILD",
    "PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE", "GET", "BINGET", "LONG_BINGET"))
"""Opcodes of the data a pack holds; object construction (INST, OBJ, NEWOBJ), extensions, persistent
ids and out-of-band buffers are refused."""
_PUTS = frozenset(("PUT", "BINPUT", "LONG_BINPUT"))
_PACK_DTYPES = (np.dtype(np.uint8), np.dtype(np.bool_))


def _scan(data: bytes, path: str) -> None:
    """Check the opcode stream of ``data`` without building anything; PackError on what the loader
    refuses."""
    n_memo = 0
    try:
        for op, arg, pos in pickletools.genops(io.BytesIO(data)):
            if op.name not in _OPCODES:
                raise PackError(f"{path}: refusing to unpickle opcode {op.name} at byte {pos}: a verification pack "
                                "holds only bytes, uint8 arrays, bools, lists and tuples")
            if op.name == "PROTO" and arg > pickle.HIGHEST_PROTOCOL:
                raise PackError(f"{path}: pickle protocol {arg} at byte {pos} (at most "
                                f"{pickle.HIGHEST_PROTOCOL})")
            if op.name == "FRAME" and arg > len(data) - pos:
                raise PackError(f"{path}: not a readable verification pack (truncated: a frame of "
                                f"{arg} bytes at byte {pos} runs past the end of the file)")
            if op.name in _PUTS:
                if arg > n_memo:
                    raise PackError(f"{path}: memo index {arg} at byte {pos} after {n_memo} memo "
                                    "entries: not written by a pickler (a memory bomb?)")
                n_memo = max(n_memo, arg + 1)
            elif op.name == "MEMOIZE":
                n_memo += 1
    except PackError:
        raise
    except Exception as e:  # truncated or garbled stream
        raise PackError(f"{path}: not a readable verification pack "
                        f"({type(e).__name__}: {e})") from None


def _numpy_attr(name: str) -> Any:
    for module in ("numpy._core.multiarray", "numpy._core.numeric", "numpy.core.multiarray",
                   "numpy.core.numeric"):
        try:
            return getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue
    raise ImportError(f"numpy has no {name}")


class _PackUnpickler(pickle.Unpickler):
    """Unpickler that can only build what a pack holds: bytes, lists, tuples, bools and uint8/bool
    arrays."""

    class _NDArrayToken:
        """Stands for numpy.ndarray: it may only be passed to _reconstruct, never called."""

    def __init__(self, file, path: str) -> None:
        # py2 packs: str -> latin1 str, converted back to bytes later
        super().__init__(file, encoding="latin1")
        self.path = path
        self._reconstruct = _numpy_attr("_reconstruct")
        self._frombuffer = _numpy_attr("_frombuffer")

    def _refuse(self, what: str) -> PackError:
        return PackError(f"{self.path}: refusing to unpickle {what}: a verification pack holds "
                         "only bytes, uint8 arrays, bools, lists and tuples")

    def _dtype(self, spec, align=False, copy=False) -> np.dtype:
        if not isinstance(spec, (str, bytes)):
            raise self._refuse(f"numpy.dtype({spec!r})")
        dt = np.dtype(spec)
        if dt not in _PACK_DTYPES:
            raise self._refuse(f"an array of dtype {dt}")
        return dt

    def _reconstruct_checked(self, subtype, shape, typecode):
        # numpy always writes _reconstruct(ndarray, (0,), b'b'), then sets dtype and data from the
        # state
        if subtype is not self._NDArrayToken or tuple(shape) != (0,) or typecode not in (b"b", "b"):
            raise self._refuse(f"numpy _reconstruct({subtype!r}, {shape!r}, {typecode!r})")
        return self._reconstruct(np.ndarray, (0,), b"b")

    def _frombuffer_checked(self, buf, dtype, shape, order):
        if not isinstance(dtype, np.dtype) or dtype not in _PACK_DTYPES:
            raise self._refuse(f"an array of dtype {dtype!r}")
        return self._frombuffer(buf, dtype, shape, order)

    def _encode(self, text, encoding="latin1"):  # how protocol <= 2 spells bytes
        if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
            raise self._refuse(f"_codecs.encode({type(text).__name__}, {encoding!r})")
        return text.encode("latin1")

    def _bytearray(self, data=b"", encoding="latin1"):
        if isinstance(data, str):
            return bytearray(self._encode(data, encoding))
        if not isinstance(data, (bytes, bytearray)):
            raise self._refuse(f"bytearray({type(data).__name__})")
        return bytearray(data)

    def find_class(self, module: str, name: str):
        allowed = {
            ("numpy", "dtype"): self._dtype,
            ("numpy", "ndarray"): self._NDArrayToken,
            ("_codecs", "encode"): self._encode,
            ("builtins", "bytearray"): self._bytearray,
            ("__builtin__", "bytearray"): self._bytearray,
        }
        for np_module in ("numpy.core.multiarray", "numpy._core.multiarray"):
            allowed[(np_module, "_reconstruct")] = self._reconstruct_checked
        for np_module in ("numpy.core.numeric", "numpy._core.numeric"):
            allowed[(np_module, "_frombuffer")] = self._frombuffer_checked
        if (module, name) not in allowed:
            raise self._refuse(f"global {module}.{name}")
        return allowed[(module, name)]

    def persistent_load(self, pid):
        raise self._refuse(f"persistent id {pid!r}")


def load_pack_pickle(data: bytes, path: str) -> Any:
    """The object a pack's bytes ``data`` hold; PackError (naming ``path``) on anything a pack
    cannot hold."""
    _scan(data, path)
    try:
        return _PackUnpickler(io.BytesIO(data), path).load()
    except PackError:
        raise
    except Exception as e:
        # inconsistent stream the scan cannot see (stack underflow, bad memo reference ...)
        raise PackError(f"{path}: not a readable verification pack "
                        f"({type(e).__name__}: {e})") from None
