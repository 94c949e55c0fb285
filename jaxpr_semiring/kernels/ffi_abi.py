"""The parts of XLA's FFI C ABI (``xla/ffi/api/c_api.h``, shipped in ``jaxlib/include``) that
the CPU kernels' handler reads, as ``ctypes`` structs (each up to the last field used), and the
byte offsets of the fields the numba side loads (:mod:`.numba_loops`).

>>> ARGS > 0 and BUF_DATA == 24
True
"""

from __future__ import annotations

import ctypes

__all__ = [
    "ExtensionBase",
    "ApiVersion",
    "Metadata",
    "MetadataExtension",
    "ErrorCreateArgs",
    "Api",
    "CallFrame",
    "Buffer",
    "Scalar",
    "METADATA_EXTENSION",
    "API_MAJOR",
    "ERROR_INVALID_ARGUMENT",
    "ERROR_INTERNAL",
    "ARGS",
    "RETS",
    "ATTRS",
    "BUF_DTYPE",
    "BUF_DATA",
    "BUF_RANK",
    "BUF_DIMS",
    "SCALAR_VALUE",
    "F32",
    "F64",
]


class ExtensionBase(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_size_t), ("type", ctypes.c_int), ("next", ctypes.c_void_p)]


class ApiVersion(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("extension_start", ctypes.c_void_p),
        ("major_version", ctypes.c_int),
        ("minor_version", ctypes.c_int),
    ]


class Metadata(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("api_version", ApiVersion),
        ("traits", ctypes.c_uint32),
    ]


class MetadataExtension(ctypes.Structure):
    _fields_ = [("extension_base", ExtensionBase), ("metadata", ctypes.POINTER(Metadata))]


class ErrorCreateArgs(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("extension_start", ctypes.c_void_p),
        ("message", ctypes.c_char_p),
        ("errc", ctypes.c_int),
    ]


class Api(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("extension_start", ctypes.c_void_p),
        ("api_version", ApiVersion),
        ("internal_api", ctypes.c_void_p),
        ("error_create", ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.POINTER(ErrorCreateArgs))),
    ]


class List(ctypes.Structure):  # XLA_FFI_Args / XLA_FFI_Rets
    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("extension_start", ctypes.c_void_p),
        ("size", ctypes.c_int64),
        ("types", ctypes.c_void_p),
        ("items", ctypes.c_void_p),
    ]


class Attrs(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("extension_start", ctypes.c_void_p),
        ("size", ctypes.c_int64),
        ("types", ctypes.c_void_p),
        ("names", ctypes.c_void_p),
        ("attrs", ctypes.c_void_p),
    ]


class CallFrame(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("extension_start", ctypes.c_void_p),
        ("api", ctypes.POINTER(Api)),
        ("ctx", ctypes.c_void_p),
        ("stage", ctypes.c_int),
        ("args", List),
        ("rets", List),
        ("attrs", Attrs),
    ]


class Buffer(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("extension_start", ctypes.c_void_p),
        ("dtype", ctypes.c_int),
        ("data", ctypes.c_void_p),
        ("rank", ctypes.c_int64),
        ("dims", ctypes.c_void_p),
    ]


class Scalar(ctypes.Structure):
    _fields_ = [("dtype", ctypes.c_int), ("value", ctypes.c_void_p)]


METADATA_EXTENSION = 1
# The FFI API major version these structs mirror (jaxlib 0.10's ``XLA_FFI_API_MAJOR``): a call
# frame of another major version is refused with an error, never read.
API_MAJOR = 0
ERROR_INVALID_ARGUMENT, ERROR_INTERNAL = 3, 13

# byte offsets the numba side reads (ints: compile-time constants there)
ARGS = CallFrame.args.offset + List.items.offset
RETS = CallFrame.rets.offset + List.items.offset
ATTRS = CallFrame.attrs.offset + Attrs.attrs.offset
BUF_DTYPE, BUF_DATA = Buffer.dtype.offset, Buffer.data.offset
BUF_RANK, BUF_DIMS = Buffer.rank.offset, Buffer.dims.offset
SCALAR_VALUE = Scalar.value.offset
F32, F64 = 11, 12  # XLA_FFI_DataType
