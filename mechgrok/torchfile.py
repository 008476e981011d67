"""Checking a torch ``.pth`` file before it is loaded: what it references, and how much it holds.

:func:`check_torch_file` reads the file's pickle with an unpickler of its own in which every
allowed global is an inert stand-in that records its arguments and builds nothing, so no
object of the file is created and no memory beyond the pickle's own is taken. It refuses,
with a ``ValueError`` naming the path and the reason:

* a global outside ``allowed`` (both the zip format and the pre-1.6 legacy format);
* a zip entry that is compressed (torch writes them stored; a compressed one can be a bomb),
  and a file or tensor data over :data:`MAX_BYTES`;
* a storage whose declared size is more than the file holds;
* a tensor that is not a dense, non-overlapping view inside its storage (a stride-0 tensor of
  5e7 "losses" backed by 8 bytes), or that lives on a device other than the CPU or CUDA;
* one state dict referenced more than twice (a file's final weights may be its last checkpoint
  too), or tensor data referenced more than twice over (each reference would be converted into
  a copy), and lists longer than :data:`MAX_LIST_LENGTH`.

Only then does :mod:`mechgrok.formats` call ``torch.load(weights_only=True)``, whose memory is
then the file's tensor bytes. The limits are module constants; tests set them low.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import zipfile
from collections.abc import Collection
from dataclasses import dataclass

__all__ = ["MAX_BYTES", "MAX_LIST_LENGTH", "TORCH_GLOBALS", "check_torch_file"]

MAX_BYTES = 8 << 30  # the original's 50k-epoch full_run_data.pth with 500 checkpoints is ~0.5 GB
MAX_LIST_LENGTH = 10_000_000  # a loss history of 10M epochs; the paper's has 50k
_MAX_PICKLE_BYTES = 256 << 20

# The torch globals a saved state dict and a HookedTransformerConfig reference. torch's own
# weights-only allowlist is wider (bytearray, sparse, meta, nested and quantized tensors ...).
_STORAGES = {
    "torch.FloatStorage": 4, "torch.DoubleStorage": 8, "torch.HalfStorage": 2, "torch.BFloat16Storage": 2,
    "torch.LongStorage": 8, "torch.IntStorage": 4, "torch.ShortStorage": 2, "torch.CharStorage": 1,
    "torch.ByteStorage": 1, "torch.BoolStorage": 1, "torch.UntypedStorage": 1,
}  # fmt: skip
_DTYPES = ("float32", "float64", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "bool")
_REBUILD = "torch._utils._rebuild_tensor_v2"
TORCH_GLOBALS = frozenset({_REBUILD, "collections.OrderedDict", "_codecs.encode", "torch.device",
                           *_STORAGES, *(f"torch.{d}" for d in _DTYPES)})


class _Refused(ValueError):
    pass


@dataclass
class _Storage:
    key: str
    nbytes: int
    itemsize: int


class _Stub:
    """A global of the file, inert: calling it (or NEWOBJ, or BUILD) records the arguments."""

    name = ""

    def __new__(cls, *args, **kwargs):
        obj = object.__new__(cls)
        obj.args, obj.state = args, None
        return obj

    def __init__(self, *args, **kwargs) -> None:
        pass

    def __setstate__(self, state) -> None:
        self.state = state


class _Tensor(_Stub):
    """``_rebuild_tensor_v2(storage, offset, size, stride, ...)``, checked as it is called."""

    def __new__(cls, *args, **kwargs):
        obj = super().__new__(cls, *args)
        storage, offset, size, stride = (list(args) + [None] * 4)[:4]
        ints = lambda xs: isinstance(xs, tuple) and all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in xs)
        if not isinstance(storage, _Storage) or not isinstance(offset, int) or offset < 0 or not ints(size) \
                or not ints(stride) or len(size) != len(stride):
            raise _Refused("a tensor that is not a plain strided tensor over a storage")
        numel = 1
        for n in size:
            numel *= n
        obj.nbytes = numel * storage.itemsize
        if numel:
            last = offset + sum((n - 1) * s for n, s in zip(size, stride))
            expect = 1
            for s, n in sorted((s, n) for n, s in zip(size, stride) if n > 1):
                if s < expect:
                    raise _Refused(f"a tensor of shape {list(size)} with strides {list(stride)} whose elements overlap "
                                   f"(stride 0 repeats one element); mechgrok reads dense tensors only")
                expect = s * n
            if (last + 1) * storage.itemsize > storage.nbytes:
                raise _Refused(f"a tensor of shape {list(size)} reaching element {last} of a storage of "
                               f"{storage.nbytes // storage.itemsize}; its storage does not cover it")
        return obj


class _Encode(_Stub):
    """``_codecs.encode(text, 'latin1')``: how protocol 2 pickles bytes; anything else is refused."""

    def __new__(cls, *args, **kwargs):
        if len(args) != 2 or not isinstance(args[0], str) or args[1] not in ("latin1", "latin-1"):
            raise _Refused("_codecs.encode called other than as protocol 2 pickles bytes")
        return super().__new__(cls, *args)


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, allowed: Collection[str], storages: dict[str, int]):
        super().__init__(file)
        self.allowed, self.storages, self.stubs = allowed, storages, {}

    def find_class(self, module: str, name: str):
        full = f"{module}.{name}"
        if full not in self.allowed:
            raise _Disallowed(full)
        if full == "collections.OrderedDict":
            return collections.OrderedDict  # a plain container; SETITEMS fills it
        if full not in self.stubs:
            base = _Tensor if full == _REBUILD else _Encode if full == "_codecs.encode" else _Stub
            self.stubs[full] = type(f"stub:{full}", (base,), {"name": full})
        return self.stubs[full]

    def persistent_load(self, pid):
        # ('storage', storage type, key, location, numel) in both formats; the legacy one adds view metadata
        if not isinstance(pid, tuple) or len(pid) < 5 or pid[0] != "storage":
            raise _Refused(f"an unknown persistent reference {str(pid)[:80]}")
        kind, key, location, numel = pid[1], pid[2], pid[3], pid[4]
        itemsize = _STORAGES.get(getattr(kind, "name", None))
        if itemsize is None or not isinstance(numel, int) or numel < 0 or not isinstance(key, str):
            raise _Refused(f"a storage reference {str(pid)[:80]} that is not one of {sorted(_STORAGES)}")
        if not isinstance(location, str) or not location.startswith(("cpu", "cuda")):
            raise _Refused(f"a storage on device {location!r}; mechgrok reads tensors saved on the CPU or CUDA")
        nbytes = numel * (1 if kind.name == "torch.UntypedStorage" else itemsize)
        self.storages[key] = max(self.storages.get(key, 0), nbytes)
        return _Storage(key, nbytes, itemsize)


class _Disallowed(Exception):
    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


def _scan(f, allowed: Collection[str], storages: dict[str, int]):
    try:
        return _Unpickler(f, allowed, storages).load()
    except (_Refused, _Disallowed):
        raise
    except Exception as err:  # a truncated or malformed pickle
        raise _Refused(f"its pickle is malformed or truncated ({type(err).__name__}: {err})") from None


def _walk(obj, path: str) -> int:
    """Refuse repeated state dicts and over-long lists; return the bytes of every tensor reference."""
    seen_dicts: dict[int, int] = {}
    referenced = 0
    stack = [obj]
    while stack:
        x = stack.pop()
        if isinstance(x, dict):
            if any(isinstance(v, _Tensor) for v in x.values()):
                # twice is a file's final weights that are also its last checkpoint; more is a bomb
                seen_dicts[id(x)] = seen_dicts.get(id(x), 0) + 1
                if seen_dicts[id(x)] > 2:
                    raise _Refused("one state dict referenced more than twice (each reference would become a copy)")
                if seen_dicts[id(x)] > 1:
                    continue
            stack.extend(x.values())
            stack.extend(x.keys())
        elif isinstance(x, (list, tuple)):
            if len(x) > MAX_LIST_LENGTH:
                raise _Refused(f"a list of {len(x):,} entries, over mechgrok.torchfile.MAX_LIST_LENGTH={MAX_LIST_LENGTH:,}")
            stack.extend(x)
        elif isinstance(x, _Tensor):
            referenced += x.nbytes
        elif isinstance(x, _Stub):
            stack.extend(x.args)
            if x.state is not None:
                stack.append(x.state)
        elif hasattr(x, "__dict__") and isinstance(getattr(x, "__dict__", None), dict) and not isinstance(x, type):
            stack.append(vars(x))
    return referenced


def check_torch_file(path: str, allowed: Collection[str]) -> None:
    """Refuse ``path`` (``ValueError``) unless it is a torch checkpoint that holds only the
    globals ``allowed`` and plain, dense tensors within :data:`MAX_BYTES` (module docstring)."""
    size = os.path.getsize(path)
    if size > MAX_BYTES:
        raise ValueError(f"{path} is {size:,} bytes, over the {MAX_BYTES:,} mechgrok reads (mechgrok.torchfile.MAX_BYTES)")
    storages: dict[str, int] = {}
    try:
        if zipfile.is_zipfile(path):
            obj, data = _scan_zip(path, allowed, storages)
        else:
            obj, data = _scan_legacy(path, allowed, storages, size)
        referenced = _walk(obj, path)
    except _Disallowed as err:
        raise ValueError(
            f"{path}: the file contains a disallowed object ({err.name}); mechgrok refuses to unpickle it, because "
            "unpickling it could run arbitrary code or build objects no checkpoint needs. mechgrok reads only "
            "tensors, plain containers and the TransformerLens Grokking demo's config. If you trust the file, "
            "re-save its tensors yourself."
        ) from None
    except _Refused as err:
        raise ValueError(f"{path}: the file holds {err}; mechgrok refuses to load it") from None
    if data > MAX_BYTES:
        raise ValueError(f"{path} declares {data:,} bytes of tensors, over the {MAX_BYTES:,} mechgrok reads "
                         "(mechgrok.torchfile.MAX_BYTES)")
    if referenced > 2 * data + (1 << 20):
        raise ValueError(f"{path}: its tensors refer to {referenced:,} bytes of data, but it holds only {data:,}: the "
                         "same tensor data is referenced more than once; mechgrok refuses to load it")


def _scan_zip(path: str, allowed: Collection[str], storages: dict[str, int]):
    with zipfile.ZipFile(path) as archive:
        infos = archive.infolist()
        compressed = [i.filename for i in infos if i.compress_type != zipfile.ZIP_STORED]
        if compressed:
            raise _Refused(f"compressed entries ({compressed[0]}); torch.save stores its entries uncompressed")
        total = sum(i.file_size for i in infos)
        if total > MAX_BYTES:
            raise _Refused(f"{total:,} bytes of entries, over mechgrok.torchfile.MAX_BYTES={MAX_BYTES:,}")
        pickles = [i for i in infos if i.filename.endswith("/data.pkl") and i.filename.count("/") == 1]
        if len(pickles) != 1 or pickles[0].file_size > _MAX_PICKLE_BYTES:
            raise _Refused(f"{len(pickles)} data.pkl entries of a torch.save archive (it has one, under "
                           f"{_MAX_PICKLE_BYTES:,} bytes)")
        prefix = pickles[0].filename.rsplit("/", 1)[0]
        obj = _scan(io.BytesIO(archive.read(pickles[0])), allowed, storages)
        records = {i.filename: i.file_size for i in infos}
    for key, nbytes in storages.items():
        have = records.get(f"{prefix}/data/{key}")
        if have is None or have < nbytes:
            raise _Refused(f"a storage {key!r} of {nbytes:,} bytes whose record holds {have or 0:,}: it is truncated or corrupt")
    return obj, sum(storages.values())


def _scan_legacy(path: str, allowed: Collection[str], storages: dict[str, int], size: int):
    with open(path, "rb") as f:
        if not f.read(1) == b"\x80":
            raise _Refused("neither a zip archive nor a pickle (torch.save writes one of the two)")
        f.seek(0)
        for _ in range(3):  # magic number, protocol version, system info: plain values only
            _scan(f, (), {})
        obj = _scan(f, allowed, storages)
        keys = _scan(f, (), {})
        if not isinstance(keys, list) or sorted(map(str, keys)) != sorted(storages):
            raise _Refused("a storage list that does not match its storage references")
        rest = size - f.tell()
    need = sum(8 + n for n in storages.values())
    if need > rest:
        raise _Refused(f"storages of {need:,} bytes, but only {rest:,} bytes follow its pickle: it is truncated or corrupt")
    return obj, sum(storages.values())
