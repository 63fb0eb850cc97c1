"""Write a minimal RAR 5 archive (files stored, not compressed), so that tests can check the
RAR path of the download step without the non-free `rar` tool. Follows RARLAB's "RAR 5.0
archive format" note: signature, main header, one file header per member, end header; each
header is CRC32 + size + body, with variable-length integers (7 bits a byte, low first)."""

import struct
import zlib


def _vint(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _header(body: bytes) -> bytes:
    data = _vint(len(body)) + body
    return struct.pack("<I", zlib.crc32(data)) + data


def rar5_stored(members: dict[str, bytes]) -> bytes:
    out = bytearray(b"Rar!\x1a\x07\x01\x00")
    out += _header(_vint(1) + _vint(0) + _vint(0))  # main archive header: no flags
    for name, data in members.items():
        raw = name.encode()
        out += _header(_vint(2) + _vint(0x0002) + _vint(len(data))  # file header with a data area
                       + _vint(0x0004) + _vint(len(data)) + _vint(0x20)  # CRC present; size; attributes
                       + struct.pack("<I", zlib.crc32(data))
                       + _vint(0) + _vint(0)  # method: store; host OS: Windows
                       + _vint(len(raw)) + raw) + data
    out += _header(_vint(5) + _vint(0) + _vint(0))  # end of archive
    return bytes(out)
