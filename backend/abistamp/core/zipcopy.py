"""A minimal zip writer that copies members of another zip without recompressing them.

A stamped wheel differs from its source in a few `.dist-info` files; every other member's
compressed bytes are copied as they are, with ``os.copy_file_range`` where the kernel has it, so
the cost is close to a file copy and memory does not grow with the wheel (GiB wheels). Zip64 is
written where sizes or offsets need it. What to copy and what to write is core/stamp.py's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import struct
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

from .atomic import replacing
from .errors import AbistampError


@contextlib.contextmanager
def atomic_output(target: Path) -> Iterator[int]:
    """A file descriptor to write the new file; renamed onto target only on success."""
    with replacing(target) as tmp:
        # No O_TRUNC: mkstemp made the file empty, and on ext4 (auto_da_alloc) a truncated
        # file is flushed to disk on close, which cost 0.36 s for a 1 GiB wheel (more than
        # copying it).
        fd = os.open(tmp, os.O_WRONLY)
        try:
            yield fd
        finally:
            os.close(fd)


_LOCAL = struct.Struct("<4sHHHHHIIIHH")
_CENTRAL = struct.Struct("<4sHHHHHHIIIHHHHHII")
_EOCD = struct.Struct("<4sHHHHIIH")
_ZIP64_EOCD = struct.Struct("<4sQHHIIQQQQ")
_ZIP64_LOCATOR = struct.Struct("<4sIQI")
_MAX32 = 0xFFFFFFFF
_COPY_CHUNK = 1 << 30


def _dos_time(dt: tuple[int, ...]) -> tuple[int, int]:
    y, mo, d, h, mi, s = dt[:6]
    return (h << 11) | (mi << 5) | (s // 2), ((max(y, 1980) - 1980) << 9) | (mo << 5) | d


@dataclasses.dataclass
class _Entry:
    name: bytes
    flags: int
    method: int
    dos: tuple[int, int]
    crc: int
    csize: int
    usize: int
    offset: int
    create: int
    external: int


class RawZipWriter:
    """Writes a zip whose members are either copied raw from another zip or given as bytes."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.pos = 0
        self.pending = bytearray()
        self.entries: list[_Entry] = []

    def _emit(self, data: bytes) -> None:
        self.pending += data
        self.pos += len(data)
        if len(self.pending) > 1 << 20:
            self._flush()

    def _flush(self) -> None:
        with memoryview(self.pending) as whole:
            view = whole
            while view:
                view = view[os.write(self.fd, view):]
            del view
        self.pending.clear()

    def _local_header(self, e: _Entry) -> None:
        zip64 = e.csize >= _MAX32 or e.usize >= _MAX32
        extra = struct.pack("<HHQQ", 1, 16, e.usize, e.csize) if zip64 else b""
        self._emit(_LOCAL.pack(
            b"PK\x03\x04", 45 if zip64 else 20, e.flags, e.method, e.dos[0], e.dos[1], e.crc,
            _MAX32 if zip64 else e.csize, _MAX32 if zip64 else e.usize, len(e.name), len(extra),
        ) + e.name + extra)

    def copy_member(self, src_fd: int, info: zipfile.ZipInfo, new_name: str) -> None:
        head = os.pread(src_fd, _LOCAL.size, info.header_offset)
        if len(head) != _LOCAL.size or head[:4] != b"PK\x03\x04":
            raise AbistampError(f"member `{info.filename}` has no valid local header",
                                "the wheel is corrupt; build or download it again")
        name_len, extra_len = struct.unpack("<HH", head[26:30])
        start = info.header_offset + _LOCAL.size + name_len + extra_len
        entry = _Entry(
            name=new_name.encode("utf-8"), flags=(info.flag_bits & ~0x08) | 0x800,
            method=info.compress_type, dos=_dos_time(info.date_time), crc=info.CRC,
            csize=info.compress_size, usize=info.file_size, offset=self.pos,
            create=(info.create_system << 8) | 20, external=info.external_attr,
        )
        self.entries.append(entry)
        self._local_header(entry)
        self._flush()
        try:
            _copy_range(src_fd, self.fd, start, info.compress_size)
        except AbistampError as e:
            raise AbistampError(f"{e.problem} (`{info.filename}`)", e.fix) from None
        self.pos += info.compress_size

    def add_bytes(self, name: str, data: bytes, when: tuple[int, ...]) -> None:
        comp = zlib.compressobj(9, zlib.DEFLATED, -15)
        packed = comp.compress(data) + comp.flush()
        entry = _Entry(
            name=name.encode("utf-8"), flags=0x800, method=zipfile.ZIP_DEFLATED,
            dos=_dos_time(when), crc=zlib.crc32(data), csize=len(packed), usize=len(data),
            offset=self.pos, create=(3 << 8) | 20, external=(0o100644 << 16),
        )
        self.entries.append(entry)
        self._local_header(entry)
        self._emit(packed)

    def finish(self) -> None:
        cd_start = self.pos
        for e in self.entries:
            extra = b""
            csize, usize, offset = e.csize, e.usize, e.offset
            if usize >= _MAX32:
                extra += struct.pack("<Q", usize)
                usize = _MAX32
            if csize >= _MAX32:
                extra += struct.pack("<Q", csize)
                csize = _MAX32
            if offset >= _MAX32:
                extra += struct.pack("<Q", offset)
                offset = _MAX32
            if extra:
                extra = struct.pack("<HH", 1, len(extra)) + extra
            self._emit(_CENTRAL.pack(
                b"PK\x01\x02", e.create, 45 if extra else 20, e.flags, e.method, e.dos[0],
                e.dos[1], e.crc, csize, usize, len(e.name), len(extra), 0, 0, 0, e.external,
                offset,
            ) + e.name + extra)
        cd_size = self.pos - cd_start
        count = len(self.entries)
        if count >= 0xFFFF or cd_start >= _MAX32 or cd_size >= _MAX32:
            z64 = self.pos
            self._emit(_ZIP64_EOCD.pack(b"PK\x06\x06", _ZIP64_EOCD.size - 12, 45, 45, 0, 0,
                                        count, count, cd_size, cd_start))
            self._emit(_ZIP64_LOCATOR.pack(b"PK\x06\x07", 0, z64, 1))
            self._emit(_EOCD.pack(b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, _MAX32, _MAX32, 0))
        else:
            self._emit(_EOCD.pack(b"PK\x05\x06", 0, 0, count, count, cd_size, cd_start, 0))
        self._flush()


def _copy_range(src_fd: int, dst_fd: int, offset: int, count: int) -> None:
    """Copy count bytes at offset of src to the current position of dst, in the kernel if we can."""
    done = 0
    use_kernel = hasattr(os, "copy_file_range")
    while done < count:
        n = 0
        if use_kernel:
            try:
                n = os.copy_file_range(src_fd, dst_fd, min(count - done, _COPY_CHUNK),
                                       offset + done)
            except OSError:
                use_kernel = False  # another filesystem or an old kernel: copy in user space
                continue
        else:
            chunk = os.pread(src_fd, min(count - done, 1 << 20), offset + done)
            n = len(chunk)
            view = memoryview(chunk)
            while view:
                view = view[os.write(dst_fd, view):]
        if n == 0:
            raise AbistampError("the wheel ends inside a member",
                                "the wheel is truncated; build or download it again")
        done += n
