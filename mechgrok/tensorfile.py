"""Reading and writing mechgrok's ``.safetensors`` files: header first, size-capped, checksummed.

A safetensors file is an 8-byte little-endian header length, a JSON header (each tensor's
dtype, shape and byte range, plus a ``__metadata__`` dict of strings) and the tensors' bytes.
:func:`read_tensors` checks the header against the file's real size before it reads a byte of
the body, so a damaged, truncated or hostile file is refused in milliseconds and with no
memory; a file over :data:`MAX_FILE_BYTES` is refused before anything is read. Each tensor is
read straight into its own buffer, so reading takes the file's tensor bytes once.

:func:`tensors_to_bytes` stores a SHA-256 of the tensors (:func:`checksum`: names, dtypes,
shapes and bytes) in the metadata under :data:`CHECKSUM_KEY`; :func:`read_tensors` verifies it
when it is there, so a flipped byte anywhere in the data is caught. (Files written before the
checksum existed have none and are read as they are.)
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors.torch import save as st_save_bytes
from torch import Tensor

__all__ = ["CHECKSUM_KEY", "MAX_FILE_BYTES", "MAX_HEADER_BYTES", "DamagedFile", "TooLarge", "checksum", "read_header",
           "read_tensors", "tensors_to_bytes"]

CHECKSUM_KEY = "sha256"
# Refuse larger files before reading them: the paper's p=113 checkpoint is 1.7 MB, and a
# sweep's largest is a few MB. Tests set it low.
MAX_FILE_BYTES = 4 << 30
MAX_HEADER_BYTES = 100 << 20  # the safetensors library's own limit

_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}  # fmt: skip


class DamagedFile(ValueError):
    """A file that is not a whole, well-formed safetensors file (the message says what is wrong)."""


class TooLarge(DamagedFile):
    """A file over :data:`MAX_FILE_BYTES`, refused before it is read."""


def checksum(tensors: dict[str, Tensor]) -> str:
    """SHA-256 over the tensors in name order: each one's name, dtype, shape and bytes."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}\0{str(t.dtype)}\0{tuple(t.shape)}\0".encode())
        if t.numel():
            digest.update(t.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def tensors_to_bytes(tensors: dict[str, Tensor], metadata: dict[str, str]) -> bytes:
    """The safetensors bytes of ``tensors``, with their :func:`checksum` added to ``metadata``."""
    tensors = {name: t.contiguous() for name, t in tensors.items()}
    return st_save_bytes(tensors, metadata={**metadata, CHECKSUM_KEY: checksum(tensors)})


def read_header(path: Path) -> tuple[dict, int, int]:
    """(header, header length, file size) of a safetensors file, checked against the file's size."""
    path = Path(path)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size > MAX_FILE_BYTES:
            raise TooLarge(f"{path} is {size:,} bytes, over the {MAX_FILE_BYTES:,} bytes mechgrok reads "
                              "(mechgrok.tensorfile.MAX_FILE_BYTES); a mechgrok checkpoint is a few MB")
        head = f.read(8)
        if len(head) < 8:
            raise DamagedFile(f"{path} is {size} bytes, shorter than a safetensors header")
        n = int.from_bytes(head, "little")
        if not 2 <= n <= min(size - 8, MAX_HEADER_BYTES):
            raise DamagedFile(f"{path}: its header claims {n:,} bytes, but the file has {size:,}; it is truncated or not "
                              "a safetensors file")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise DamagedFile(f"{path}: its safetensors header is not valid JSON ({err})") from None
    if not isinstance(header, dict):
        raise DamagedFile(f"{path}: its safetensors header is a JSON {type(header).__name__}, not an object")
    _check_layout(path, header, size - 8 - n)
    return header, n, size


def _check_layout(path: Path, header: dict, body: int) -> None:
    """Every tensor's dtype and shape fit its byte range, and the ranges tile the body exactly."""
    metadata = header.get("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise DamagedFile(f"{path}: its __metadata__ is not a dict of strings")
    ranges = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = _DTYPES[info["dtype"]]
            shape = [int(d) for d in info["shape"]]
            begin, end = (int(x) for x in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise DamagedFile(f"{path}: tensor {name!r} has no valid dtype, shape and data_offsets "
                              f"(dtypes read: {sorted(_DTYPES)})") from None
        numel = 1
        for d in shape:
            if d < 0:
                raise DamagedFile(f"{path}: tensor {name!r} has a negative dimension {shape}")
            numel *= d
        if end - begin != numel * dtype.itemsize or begin < 0:
            raise DamagedFile(f"{path}: tensor {name!r} ({info['dtype']} {shape}) does not fit its bytes {begin}..{end}")
        ranges.append((begin, end, name))
    offset = 0
    for begin, end, name in sorted(ranges):
        if begin != offset:
            raise DamagedFile(f"{path}: tensor {name!r} starts at byte {begin}, not {offset}; the file is damaged")
        offset = end
    if offset != body:
        raise DamagedFile(f"{path}: its tensors take {offset:,} bytes but the file holds {body:,} after the header; "
                          "it is truncated or damaged")


def read_tensors(path: Path, into: dict[str, Tensor] | None = None) -> tuple[dict[str, Tensor], dict[str, str]]:
    """(tensors, metadata) of a safetensors file; ``DamagedFile`` if it is malformed, over
    :data:`MAX_FILE_BYTES`, or fails its checksum. Memory: the tensors' bytes, once.

    ``into`` maps names to contiguous CPU tensors to read into when their dtype and shape match
    (a model's own parameters, say), so that those bytes are not held twice."""
    path = Path(path)
    header, n, _ = read_header(path)
    metadata = header.pop("__metadata__", {})
    into = into or {}
    tensors = {}
    with open(path, "rb") as f:
        for name, info in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
            begin, end = info["data_offsets"]
            dtype, shape = _DTYPES[info["dtype"]], list(info["shape"])
            target = into.get(name)
            fits = (target is not None and target.dtype == dtype and list(target.shape) == shape
                    and target.device.type == "cpu" and target.is_contiguous())
            t = target if fits else torch.empty(shape, dtype=dtype)
            if end > begin:
                f.seek(8 + n + begin)
                buffer = t.reshape(-1).view(torch.uint8).numpy()
                if f.readinto(buffer) != end - begin:
                    raise DamagedFile(f"{path} shrank while it was read")
            tensors[name] = t
    saved = metadata.get(CHECKSUM_KEY)
    if saved is not None and saved != checksum(tensors):
        raise DamagedFile(f"{path}: its tensors fail their checksum ({CHECKSUM_KEY} in its metadata): a byte of the "
                          "file changed after it was written; restore it from a copy")
    return tensors, metadata
