"""Regenerate the MAT-file fixtures used by the unit tests in crates/analysis/src/mat.rs.

Run from anywhere:  python3 make.py   (needs numpy and scipy)

Only the creation timestamp in each 128-byte header changes between runs. Every file
written here (except the deliberately broken ones) is read back with scipy.io.loadmat
and compared with what was meant, so the fixtures are checked against an independent
reader before the Rust tests rely on them.

Files:
  acts.mat          scipy, format 5, uncompressed: layers, labels of many classes,
                    and non-numeric variables (char, cell, struct, complex, sparse)
  acts_z.mat        the same dictionary, compressed (every variable in miCOMPRESSED)
  acts_be.mat       acts.mat with every tag and number byte-swapped to big-endian
                    ("MI"); scipy cannot write big-endian files, but it reads them
  handmade.mat      written element by element, as MATLAB does but scipy never does:
                    doubles stored as miUINT8 / miINT16 / miINT8, a real part in the
                    small (4-byte) element format, and one compressed variable
  handmade_be.mat   handmade.mat byte-swapped to big-endian (compressed part included)
  v4.mat            scipy format 4 (no 128-byte header): must be refused
  fake_v73.mat      a v7.3 (HDF5) header: 512-byte user block + HDF5 signature
  truncated.mat     acts_z.mat cut short in its last variable
"""

import os
import struct
import zlib

import numpy as np
import scipy.io as sio
import scipy.sparse as sp

HERE = os.path.dirname(os.path.abspath(__file__))


def out(name):
    return os.path.join(HERE, name)


def acts():
    return {
        # [N, D] float32 layer
        "fc": np.arange(24, dtype=np.float32).reshape(6, 4) * 0.5 - 3,
        # [N, C, H, W] float64 layer: arange makes row-major order checkable
        "conv1": np.arange(120, dtype=np.float64).reshape(2, 3, 4, 5),
        # the example from the module's brief; 4-character name -> small name element
        "cube": np.arange(24, dtype=np.float32).reshape(2, 3, 4),
        # labels: 1-D arrays are written as [1, N]
        "labels": np.array([3, 1, 4, 1, 5, 9], dtype=np.int64),
        "labels_col": np.array([[2], [7], [1], [8], [2], [8]], dtype=np.uint8),
        "labels_f": np.array([0.0, 1.0, 2.0, -1.0, 5.0, 6.0]),
        "labels_f32": np.array([[4.0], [3.0]], dtype=np.float32),
        "labels_i8": np.array([-3, -2, -1, 0, 1, 2], dtype=np.int8),
        "labels_i16": np.array([-300, 0, 300], dtype=np.int16),
        "labels_u16": np.array([0, 65535], dtype=np.uint16),
        "labels_i32": np.array([-70000, 70000], dtype=np.int32),
        "labels_u32": np.array([4000000000], dtype=np.uint32),
        "labels_u64": np.array([10, 2**63 - 1], dtype=np.uint64),
        "labels_big": np.array([2**64 - 1], dtype=np.uint64),
        "labels_frac": np.array([0.0, 0.5, 1.0]),
        "labels_nan": np.array([1.0, np.nan]),
        "labels_2d": np.arange(6, dtype=np.int32).reshape(2, 3),
        "mask": np.array([[True, False, True]]),
        "i16": np.array([[-32768, 32767]], dtype=np.int16),
        "u32": np.array([[0, 4294967295]], dtype=np.uint32),
        "empty": np.zeros((0, 3), dtype=np.float32),
        "note": "hello",
        "cellvar": np.array([1.0, "a"], dtype=object),
        "st": {"a": 1.0},
        "z": np.array([1 + 2j, 3 - 4j]),
        "sp": sp.csc_matrix(np.eye(3)),
    }


def check_same(path, expected, mat_dtype=False):
    # mat_dtype: a double stored as miUINT8 should come back as the double MATLAB sees
    got = sio.loadmat(path, mat_dtype=mat_dtype)
    for k, v in expected.items():
        if isinstance(v, np.ndarray) and v.dtype != object:
            g = got[k]
            want = v if v.ndim >= 2 else v.reshape(1, -1)
            assert g.shape == want.shape, (path, k, g.shape, want.shape)
            # loadmat returns logical arrays as uint8
            want_dtype = np.dtype(np.uint8) if want.dtype == bool else want.dtype
            # a big-endian file comes back as big-endian dtypes
            assert g.dtype.newbyteorder("<") == want_dtype.newbyteorder("<"), (path, k, g.dtype, want.dtype)
            assert np.array_equal(g, want, equal_nan=True), (path, k)


# ---------------------------------------------------------------- byte swapping

SWAP = {1: 1, 2: 1, 3: 2, 4: 2, 5: 4, 6: 4, 7: 4, 9: 8, 12: 8, 13: 8, 16: 1, 17: 2, 18: 4}


def swap_data(ty, data):
    width = SWAP[ty]
    if width == 1:
        return data
    return b"".join(data[i : i + width][::-1] for i in range(0, len(data), width))


def swap_elements(buf):
    """Byte-swap a run of little-endian data elements into big-endian ones."""
    res = bytearray()
    pos = 0
    while pos < len(buf):
        (word,) = struct.unpack_from("<I", buf, pos)
        if word >> 16:  # small element: type and size share the first word
            ty, size = word & 0xFFFF, word >> 16
            res += struct.pack(">I", word) + swap_data(ty, buf[pos + 4 : pos + 4 + size])
            res += bytes(4 - size)
            pos += 8
            continue
        ty = word
        (size,) = struct.unpack_from("<I", buf, pos + 4)
        body = buf[pos + 8 : pos + 8 + size]
        if ty == 14:
            new = swap_elements(body)
        elif ty == 15:
            new = zlib.compress(swap_elements(zlib.decompress(body)))
        else:
            new = swap_data(ty, body)
        res += struct.pack(">II", ty, len(new)) + new
        pos += 8 + size
        if ty != 15:
            pad = (8 - size % 8) % 8
            res += bytes(pad)
            pos += pad
    return bytes(res)


def to_big_endian(src, dst):
    raw = open(src, "rb").read()
    head = bytearray(raw[:128])
    assert head[126:128] == b"IM"
    head[124:126] = b"\x01\x00"
    head[126:128] = b"MI"
    open(dst, "wb").write(bytes(head) + swap_elements(raw[128:]))


# ---------------------------------------------------------------- hand-made elements


def sub(ty, data):
    """One sub-element, in the small format when it fits in 4 bytes (as MATLAB does)."""
    if 0 < len(data) <= 4:
        return struct.pack("<HH", ty, len(data)) + data + bytes(4 - len(data))
    pad = (8 - len(data) % 8) % 8
    return struct.pack("<II", ty, len(data)) + data + bytes(pad)


def matrix(name, shape, values, mi_type, np_type, small_ok=True):
    """A double-class miMATRIX whose real part is stored as a smaller type."""
    flags = struct.pack("<II", 6, 0)  # mxDOUBLE_CLASS, no flags
    dims = struct.pack("<%di" % len(shape), *shape)
    data = np.asarray(values, dtype=np_type).reshape(shape).ravel(order="F").tobytes()
    real = sub(mi_type, data) if small_ok else struct.pack("<II", mi_type, len(data)) + data + bytes((8 - len(data) % 8) % 8)
    body = sub(6, flags) + sub(5, dims) + sub(1, name.encode()) + real
    return struct.pack("<II", 14, len(body)) + body


def header(text, version=0x0100):
    text = text.encode().ljust(116, b" ")
    return text + bytes(8) + struct.pack("<H", version) + b"IM"


def handmade():
    cd = [[1, 2, 3], [4, 5, 250]]
    negs = [[-1000, 0, 7, 32000]]
    tiny = [[9, 8, 7]]
    zc = [[-1, 2], [3, -4], [5, 127]]
    lbl = [[0, 1, 2, 1, 0]]
    elems = [
        matrix("cd", (2, 3), cd, 2, np.uint8),
        matrix("negs", (1, 4), negs, 3, np.int16),
        matrix("tiny", (1, 3), tiny, 2, np.uint8),
        matrix("lbl_compact", (1, 5), lbl, 2, np.uint8),
    ]
    inner = matrix("zc", (3, 2), zc, 1, np.int8)
    comp = zlib.compress(inner)
    elems.append(struct.pack("<II", 15, len(comp)) + comp)
    path = out("handmade.mat")
    with open(path, "wb") as f:
        f.write(header("MATLAB 5.0 MAT-file, hand-made by make.py for cnnu tests"))
        for e in elems:
            f.write(e)
    want = {
        "cd": np.array(cd, dtype=np.float64),
        "negs": np.array(negs, dtype=np.float64),
        "tiny": np.array(tiny, dtype=np.float64),
        "lbl_compact": np.array(lbl, dtype=np.float64),
        "zc": np.array(zc, dtype=np.float64),
    }
    check_same(path, want, mat_dtype=True)
    return want


def main():
    d = acts()
    sio.savemat(out("acts.mat"), d, format="5", do_compression=False)
    sio.savemat(out("acts_z.mat"), d, format="5", do_compression=True)
    check_same(out("acts.mat"), d)
    check_same(out("acts_z.mat"), d)

    to_big_endian(out("acts.mat"), out("acts_be.mat"))
    check_same(out("acts_be.mat"), d)
    assert sio.loadmat(out("acts_be.mat"))["note"][0] == "hello"

    want = handmade()
    to_big_endian(out("handmade.mat"), out("handmade_be.mat"))
    check_same(out("handmade_be.mat"), want, mat_dtype=True)

    sio.savemat(out("v4.mat"), {"x": np.arange(6.0).reshape(2, 3)}, format="4")

    with open(out("fake_v73.mat"), "wb") as f:
        h = header("MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 .", 0x0200)
        f.write(h + bytes(512 - len(h)) + b"\x89HDF\r\n\x1a\n" + bytes(8))

    raw = open(out("acts_z.mat"), "rb").read()
    open(out("truncated.mat"), "wb").write(raw[: len(raw) - 20])

    for name in sorted(os.listdir(HERE)):
        if name.endswith(".mat"):
            print("%-16s %6d bytes" % (name, os.path.getsize(out(name))))


if __name__ == "__main__":
    main()
