"""Reading OpenAI's TorchScript CLIP archives without running any of their code.

OpenAI's released ``.pt`` files are TorchScript archives (a zip holding ``data.pkl``, ``code/`` and the tensor
data). ``torch.jit.load`` would compile and run the archive's code and ``torch.load(weights_only=True)`` refuses the
format, so :func:`read_torchscript_weights` reads ``data.pkl`` with a restricted unpickler: only tensor-rebuilding
functions are allowed and the archive's ``__torch__.*`` classes become inert placeholders that keep their attributes.
"""

from __future__ import annotations

import collections
import io
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from pevl.errors import PevlError, file_error, first_line

_STORAGE_DTYPES: dict[str, torch.dtype] = {
    "DoubleStorage": torch.float64,
    "FloatStorage": torch.float32,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
    "ComplexFloatStorage": torch.complex64,
    "ComplexDoubleStorage": torch.complex128,
}


class ScriptObject:
    """Inert stand-in for a class of a TorchScript archive (``__torch__.*``): it only keeps its attributes."""

    type_name = "__torch__"

    def __setstate__(self, state: Any) -> None:
        self.attributes = dict(state) if isinstance(state, dict) else {}


def _rebuild_tensor(
    storage: Tensor, offset: int, size: tuple[int, ...], stride: tuple[int, ...], *_: Any, **__: Any
) -> Tensor:
    """Our own ``torch._utils._rebuild_tensor_v2``: a strided view of a storage read from the archive."""
    return storage.as_strided(tuple(size), tuple(stride), offset)


def _same_value(value: Any, *_: Any) -> Any:
    return value


# The only callables a TorchScript ``data.pkl`` may reach: each replaced by our own inert function.
_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("collections", "OrderedDict"): collections.OrderedDict,
    **{
        ("torch.jit._pickle", name): _same_value  # typed-container markers of TorchScript pickles
        for name in ("restore_type_tag", "build_intlist", "build_doublelist", "build_boollist", "build_tensorlist")
    },
}


class _ArchiveUnpickler(pickle.Unpickler):
    """Unpickles a TorchScript ``data.pkl`` without importing or calling anything from the archive."""

    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str) -> None:
        super().__init__(io.BytesIO(data))
        self.archive = archive
        self.prefix = prefix
        self.storages: dict[str, Tensor] = {}
        self.placeholders: dict[str, type] = {}

    def find_class(self, module: str, name: str) -> Any:
        if module == "__torch__" or module.startswith("__torch__."):
            full = f"{module}.{name}"
            if full not in self.placeholders:
                self.placeholders[full] = type(name, (ScriptObject,), {"type_name": full})
            return self.placeholders[full]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _STORAGE_DTYPES[name]
        if (module, name) in _ALLOWED_GLOBALS:
            return _ALLOWED_GLOBALS[(module, name)]
        raise pickle.UnpicklingError(f"refusing to load global '{module}.{name}'")

    def persistent_load(self, pid: Any) -> Tensor:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage" and isinstance(pid[1], torch.dtype)):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r:.80}")
        _, dtype, key, _location, numel = pid[:5]
        key = str(key)
        if key not in self.storages:
            raw = bytearray(self.archive.read(f"{self.prefix}data/{key}"))  # writable: tensors may not alias bytes
            numel = int(numel)
            if len(raw) < numel * torch.empty((), dtype=dtype).element_size():
                raise pickle.UnpicklingError(f"tensor data '{key}' is truncated ({len(raw)} bytes for {numel} values)")
            self.storages[key] = (
                torch.frombuffer(raw, dtype=dtype, count=numel) if numel else torch.empty(0, dtype=dtype)
            )
        return self.storages[key]


def _check_opcodes(data: bytes) -> None:
    """Walk the pickle's opcodes first: a corrupt memo index would make the unpickler allocate gigabytes."""
    import pickletools

    for opcode, arg, _ in pickletools.genops(data):
        if opcode.name in ("PUT", "BINPUT", "LONG_BINPUT", "GET", "BINGET", "LONG_BINGET") and int(arg) > len(data):
            raise pickle.UnpicklingError(f"memo index {arg} out of range")


def _collect_tensors(obj: ScriptObject, prefix: str, out: dict[str, Tensor], seen: set[int]) -> None:
    if id(obj) in seen:
        return
    seen.add(id(obj))
    for name, value in getattr(obj, "attributes", {}).items():
        if isinstance(value, Tensor):
            out[prefix + name] = value
        elif isinstance(value, ScriptObject):
            _collect_tensors(value, f"{prefix}{name}.", out, seen)


def _archive_prefix(names: list[str]) -> str | None:
    """The top folder of a torch zip archive (``"ViT-B-16/"``), found from its ``data.pkl`` record."""
    for name in names:
        if name.endswith("/data.pkl") and name.count("/") == 1:
            return name[: -len("data.pkl")]
    return None


def read_torchscript_weights(path: str | Path) -> dict[str, Tensor]:
    """Read the parameters and buffers of a TorchScript archive without running any of its code.

    Args:
        path: A file written by ``torch.jit.save`` (OpenAI's released CLIP ``.pt`` files are such archives).

    Returns:
        The module tree's tensors under their dotted names, like the loaded module's ``state_dict()``.

    Raises:
        PevlError: When the archive is corrupt or its ``data.pkl`` asks for anything but tensors.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            prefix = _archive_prefix(archive.namelist())
            if prefix is None:
                raise file_error(path, "zip archive without a data.pkl record (not a TorchScript file)")
            if f"{prefix}byteorder" in archive.namelist() and archive.read(f"{prefix}byteorder") != b"little":
                raise file_error(path, "big-endian TorchScript archives are not supported")
            data = archive.read(f"{prefix}data.pkl")
            _check_opcodes(data)
            root = _ArchiveUnpickler(data, archive, prefix).load()
    except PevlError:
        raise
    except Exception as err:  # untrusted bytes: whatever the unpickler trips over is a bad file, never a crash
        raise file_error(path, f"cannot read the TorchScript archive safely ({first_line(err)})") from None
    if not isinstance(root, ScriptObject):
        raise file_error(path, "the TorchScript archive does not hold a module")
    tensors: dict[str, Tensor] = {}
    _collect_tensors(root, "", tensors, set())
    return tensors
