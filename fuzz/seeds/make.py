"""Regenerate the seed corpora of the cnnu fuzz targets (fuzz/fuzz_targets/*.rs).

Run from anywhere:  python3 fuzz/seeds/make.py   (standard library only)

Files named `repro-*` are reproducers of bugs the fuzzing found. The ones libFuzzer wrote
(minimised with `cargo fuzz tmin`) are kept as they are: this script never removes a
`repro-*` file. The few written by hand are generated below like the other seeds.

Every seed is deterministic (gzip headers carry mtime 0), so re-running rewrites the
same bytes. Each target's directory gets valid small inputs plus a few broken variants
that stop the readers at different checks; libFuzzer mutates from there.

  idx/       the idx target's container (see fuzz/fuzz_targets/idx.rs):
               byte 0     flags: bit 0 = train split (else test), bit 1 = images file
                          named `.gz`, bit 2 = labels file named `.gz`
               bytes 1-2  u16 LE: length L of the images file (clamped to what is left)
               then       L bytes of images file, the rest is the labels file
             The file bytes are written as given: a `.gz` name holds whatever is there,
             so the seeds with that bit set carry real gzip streams.
  snapshot/  safetensors files shaped like cnnu snapshots (labels/predictions/indices
             I64 [N], logits F32 [N,10], taps F32 [N,C,H,W] or [N,F], `__metadata__`
             with format/epoch/...), and broken variants.
  mat/       the MAT-file fixtures of crates/analysis/tests/data/mat (copied), and a few
             hand-made damaged or lying variants.
"""

import gzip
import io
import json
import os
import shutil
import struct
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
MAT_FIXTURES = os.path.join(ROOT, "crates", "analysis", "tests", "data", "mat")


def reset(sub):
    """Empties a seed directory, keeping the fuzzer-found reproducers (`repro-*`)."""
    d = os.path.join(HERE, sub)
    if os.path.isdir(d):
        for name in os.listdir(d):
            if not name.startswith("repro-"):
                os.remove(os.path.join(d, name))
    else:
        os.makedirs(d)
    return d


def write(d, name, data):
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def gz(data):
    buf = io.BytesIO()
    # mtime=0 and no file name: byte-identical output on every run.
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0, filename="") as f:
        f.write(data)
    return buf.getvalue()


# ------------------------------------------------------------------------- idx


def idx_images(n, rows=28, cols=28, magic=2051, count=None):
    head = struct.pack(">IIII", magic, n if count is None else count, rows, cols)
    pixels = bytes((i * 7 + j) % 256 for i in range(n) for j in range(rows * cols))
    return head + pixels


def idx_labels(labels, magic=2049, count=None):
    return struct.pack(">II", magic, len(labels) if count is None else count) + bytes(labels)


def idx_seed(images, labels, train=False, img_gz=False, lbl_gz=False):
    flags = (1 if train else 0) | (2 if img_gz else 0) | (4 if lbl_gz else 0)
    assert len(images) <= 0xFFFF
    return bytes([flags]) + struct.pack("<H", len(images)) + images + labels


def make_idx():
    d = reset("idx")
    img3 = idx_images(3)
    lbl3 = idx_labels([7, 2, 1])
    write(d, "valid_test_raw", idx_seed(img3, lbl3))
    write(d, "valid_train_raw", idx_seed(img3, lbl3, train=True))
    write(d, "valid_test_gz", idx_seed(gz(img3), gz(lbl3), img_gz=True, lbl_gz=True))
    write(d, "valid_train_img_gz", idx_seed(gz(img3), lbl3, train=True, img_gz=True))
    write(d, "valid_test_lbl_gz", idx_seed(img3, gz(lbl3), lbl_gz=True))
    write(d, "valid_empty", idx_seed(idx_images(0), idx_labels([])))
    write(d, "count_mismatch", idx_seed(img3, idx_labels([7, 2])))
    write(d, "bad_label", idx_seed(img3, idx_labels([7, 10, 1])))
    write(d, "bad_dims", idx_seed(idx_images(3, rows=2, cols=2), lbl3))
    write(d, "huge_dims", idx_seed(idx_images(0, rows=0xFFFFFFFF, cols=0xFFFFFFFF, count=0xFFFFFFFF), lbl3))
    write(d, "wrong_magic_images", idx_seed(idx_images(3, magic=2049), lbl3))
    write(d, "wrong_magic_labels", idx_seed(img3, idx_labels([7, 2, 1], magic=2051)))
    write(d, "truncated_images", idx_seed(img3[:-100], lbl3))
    write(d, "trailing_labels", idx_seed(img3, lbl3 + b"\x00\x01"))
    write(d, "lying_count", idx_seed(idx_images(3, count=0x7FFFFFFF), idx_labels([1, 2, 3], count=0x7FFFFFFF)))
    write(d, "short_header", idx_seed(img3[:10], lbl3[:5]))
    zimg = bytearray(gz(img3))
    zimg[-8] ^= 0xFF  # CRC32 of the member
    write(d, "bad_gzip_crc", idx_seed(bytes(zimg), gz(lbl3), img_gz=True, lbl_gz=True))
    write(d, "truncated_gzip", idx_seed(gz(img3)[:-20], gz(lbl3), img_gz=True, lbl_gz=True))
    write(d, "not_gzip", idx_seed(img3, lbl3, img_gz=True, lbl_gz=True))
    write(d, "empty_files", idx_seed(b"", b""))
    write(d, "two_members_gz", idx_seed(gz(img3[:100]) + gz(img3[100:]), gz(lbl3), img_gz=True, lbl_gz=True))


# -------------------------------------------------------------------- safetensors


def f32s(values):
    return struct.pack("<%df" % len(values), *values)


def i64s(values):
    return struct.pack("<%dq" % len(values), *values)


def safetensors(tensors, metadata=None, header_override=None):
    """tensors: list of (name, dtype, shape, bytes) in data order."""
    header = {}
    if metadata is not None:
        header["__metadata__"] = metadata
    offset = 0
    for name, dtype, shape, data in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
    text = header_override if header_override is not None else json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(t[3] for t in tensors)


def cnnu_snapshot(n=3, c=2, h=3, w=3, epoch="2", label_tensor=None, extra=()):
    labels = label_tensor or ("labels", "I64", [n], i64s([(i * 3) % 10 for i in range(n)]))
    tensors = [
        labels,
        ("predictions", "I64", [n], i64s([(i * 7) % 10 for i in range(n)])),
        ("indices", "I64", [n], i64s(list(range(n)))),
        ("logits", "F32", [n, 10], f32s([i * 0.25 - 1 for i in range(n * 10)])),
        ("conv1", "F32", [n, c, h, w], f32s([(i % 17) * 0.5 for i in range(n * c * h * w)])),
        ("avgpool", "F32", [n, 4, 1, 1], f32s([float(i) for i in range(n * 4)])),
        ("fc", "F32", [n, 10], f32s([float(-i) for i in range(n * 10)])),
    ] + list(extra)
    meta = {
        "format": "cnnu-snapshot-1",
        "epoch": epoch,
        "seed": "42",
        "backend": "flex",
        "taps": "conv1,avgpool,fc",
        "probe_images": str(n),
        "test_accuracy": "0.5",
        "test_loss": "1.25",
    }
    return safetensors(tensors, meta)


def make_snapshot():
    d = reset("snapshot")
    n = 3
    good = cnnu_snapshot()
    write(d, "valid_cnnu", good)
    write(d, "valid_minimal", safetensors([
        ("labels", "I64", [2], i64s([0, 9])),
        ("fc", "F32", [2, 3], f32s([1, 2, 3, 4, 5, 6])),
    ]))
    write(d, "valid_empty_n0", safetensors([
        ("labels", "I64", [0], b""),
        ("fc", "F32", [0, 5], b""),
    ], {"epoch": "0"}))
    for dtype, data in [
        ("U8", bytes([1, 2, 3])),
        ("I8", bytes([1, 0xFF, 3])),
        ("I16", struct.pack("<3h", 1, -2, 3)),
        ("U16", struct.pack("<3H", 1, 65535, 3)),
        ("I32", struct.pack("<3i", 1, -2, 3)),
        ("U32", struct.pack("<3I", 1, 4000000000, 3)),
        ("F32", f32s([1.0, 2.0, 3.0])),
        ("F64", struct.pack("<3d", 1.0, 2.0, 3.0)),
    ]:
        write(d, "labels_" + dtype.lower(), cnnu_snapshot(label_tensor=("labels", dtype, [n], data)))
    write(d, "labels_f64_fraction", cnnu_snapshot(label_tensor=("labels", "F64", [n], struct.pack("<3d", 1.0, 2.5, 3.0))))
    write(d, "labels_f32_nan", cnnu_snapshot(label_tensor=("labels", "F32", [n], f32s([1.0, float("nan"), 3.0]))))
    write(d, "labels_bf16", cnnu_snapshot(label_tensor=("labels", "BF16", [n], b"\x00\x3f" * n)))
    write(d, "labels_bool", cnnu_snapshot(label_tensor=("labels", "BOOL", [n], bytes([1, 0, 1]))))
    write(d, "label_count_mismatch", cnnu_snapshot(label_tensor=("labels", "I64", [n + 1], i64s([1, 2, 3, 4]))))
    write(d, "layer_f64", safetensors([
        ("labels", "I64", [2], i64s([0, 1])),
        ("fc", "F64", [2, 2], struct.pack("<4d", 1, 2, 3, 4)),
    ]))
    write(d, "layer_1d", safetensors([
        ("labels", "I64", [2], i64s([0, 1])),
        ("fc", "F32", [2], f32s([1, 2])),
    ]))
    write(d, "layer_scalar", safetensors([
        ("labels", "I64", [1], i64s([0])),
        ("fc", "F32", [], f32s([1])),
    ]))
    write(d, "no_labels", safetensors([("fc", "F32", [2, 2], f32s([1, 2, 3, 4]))], {"epoch": "x"}))
    write(d, "epoch_not_a_number", cnnu_snapshot(epoch="-1e9"))
    write(d, "truncated", good[: len(good) - 13])
    write(d, "header_len_huge", struct.pack("<Q", 0xFFFFFFFFFFFF) + good[8:])
    write(d, "header_len_past_end", struct.pack("<Q", len(good)) + good[8:])
    write(d, "header_bad_json", safetensors([], header_override=b'{"fc":{"dtype":"F32","shape":[2,'))
    write(d, "header_not_object", safetensors([], header_override=b"[1,2,3]"))
    write(d, "offsets_overlap", safetensors([], header_override=json.dumps({
        "labels": {"dtype": "I64", "shape": [1], "data_offsets": [0, 8]},
        "fc": {"dtype": "F32", "shape": [1, 2], "data_offsets": [4, 12]},
    }).encode()) + bytes(12))
    write(d, "shape_overflow", safetensors([], header_override=json.dumps({
        "fc": {"dtype": "F32", "shape": [2**40, 2**40], "data_offsets": [0, 8]},
    }).encode()) + bytes(8))
    write(d, "empty", b"")
    write(d, "eight_zero_bytes", bytes(8))
    # Zero samples of a per-sample shape whose product overflows usize: safetensors
    # accepts it (0 elements), `load` returned it, `Activations::d()` overflowed.
    write(d, "repro-snapshot-d-overflow", safetensors([], header_override=json.dumps({
        "labels": {"dtype": "I64", "shape": [0], "data_offsets": [0, 0]},
        "fc": {"dtype": "F32", "shape": [0, 2**40, 2**40], "data_offsets": [0, 0]},
    }).encode()))


# --------------------------------------------------------------------------- mat


def mat_header(big=False):
    text = b"MATLAB 5.0 MAT-file, Platform: cnnu fuzz seed, Created on: Thu Jan  1 00:00:00 1970"
    text = text.ljust(116, b" ")
    sub = bytes(8)
    if big:
        return text + sub + b"\x01\x00" + b"MI"
    return text + sub + b"\x00\x01" + b"IM"


def pad8(b):
    return b + bytes((8 - len(b) % 8) % 8)


def sub(ty, data):
    return pad8(struct.pack("<II", ty, len(data)) + data)


def matrix(cls, dims, name, real, flags=0):
    body = sub(6, struct.pack("<II", cls | flags, 0))  # miUINT32 array flags
    body += sub(5, struct.pack("<%di" % len(dims), *dims))  # miINT32 dimensions
    body += sub(1, name.encode())  # miINT8 name
    body += real
    return sub(14, body)  # miMATRIX


def compressed(element):
    z = zlib.compress(element, 9)
    return struct.pack("<II", 15, len(z)) + z  # miCOMPRESSED, not padded


def make_mat():
    d = reset("mat")
    for name in sorted(os.listdir(MAT_FIXTURES)):
        if name.endswith(".mat"):
            shutil.copyfile(os.path.join(MAT_FIXTURES, name), os.path.join(d, name))
    hdr = mat_header()
    # A small valid file: an [N, D] single layer, an [N, C, H, W] double layer, labels.
    fc = matrix(7, [3, 2], "fc", sub(7, struct.pack("<6f", *range(6))))
    conv = matrix(6, [3, 1, 2, 2], "conv1", sub(9, struct.pack("<12d", *range(12))))
    labels = matrix(14, [1, 3], "labels", sub(12, struct.pack("<3q", 1, 0, 2)))
    write(d, "small_valid.mat", hdr + fc + conv + labels)
    write(d, "small_valid_z.mat", hdr + compressed(fc) + compressed(conv) + compressed(labels))
    # Labels for 4 samples but 3 activation rows: source::load's count check.
    labels4 = matrix(14, [1, 4], "labels", sub(12, struct.pack("<4q", 1, 0, 2, 3)))
    write(d, "label_count_mismatch.mat", hdr + fc + labels4)
    # A doubles layer stored as miUINT8, with a 4-byte small element real part.
    small = matrix(6, [2, 2], "fc", struct.pack("<HHBBBB", 2, 4, 1, 2, 3, 4))
    write(d, "small_element_real.mat", hdr + small + labels)
    # Sizes that lie: dims far beyond the data, uncompressed and compressed.
    lie = matrix(7, [100000, 100000], "fc", sub(7, bytes(16)))
    write(d, "lying_dims.mat", hdr + lie + labels)
    lie_z = bytearray(matrix(7, [40000, 25000], "fc", struct.pack("<II", 7, 4000000000) + bytes(64)))
    write(d, "lying_dims_z.mat", hdr + compressed(bytes(lie_z)) + labels)
    # The element claims more bytes than the file has.
    over = bytearray(hdr + fc + labels)
    over[132:136] = struct.pack("<I", 4000000100)
    write(d, "element_past_end.mat", bytes(over))
    # A compressed element whose stream is not miMATRIX, and one that is not zlib.
    write(d, "z_not_matrix.mat", hdr + compressed(sub(9, struct.pack("<d", 1.0))) + labels)
    write(d, "z_garbage.mat", hdr + struct.pack("<II", 15, 16) + bytes(range(16)) + labels)
    # Many dimensions, a long name, a negative dimension, unknown class.
    write(d, "many_dims.mat", hdr + matrix(6, [1] * 40, "fc", sub(9, struct.pack("<d", 1.0))) + labels)
    write(d, "negative_dim.mat", hdr + matrix(6, [3, -2], "fc", sub(9, bytes(0))) + labels)
    write(d, "unknown_class.mat", hdr + matrix(42, [1, 1], "fc", sub(9, struct.pack("<d", 1.0))) + labels)
    # Header only; and a header with an unknown version.
    write(d, "header_only.mat", hdr)
    write(d, "bad_version.mat", hdr[:124] + b"\x00\x03IM" + fc)
    # Big-endian header over little-endian elements: every size is wrong.
    write(d, "endian_mismatch.mat", mat_header(big=True) + fc + labels)
    # A zlib stream that expands 1000-fold: int8 labels, 262144 values of 0 (~300 bytes
    # compressed). Exercises the chunked growth of large real parts.
    n = 1 << 18
    big = matrix(14, [1, n], "labels", sub(1, bytes(n)), flags=0)
    big_fc = matrix(8, [n // 4, 4], "fc", sub(1, bytes(n)))
    write(d, "zlib_expands.mat", hdr + compressed(big_fc) + compressed(big))
    # Zero samples of a per-sample shape whose product overflows usize (numel is 0, so
    # the reader accepted it), and zero labels: `Activations::d()` overflowed.
    m = 2**31 - 1
    empty_fc = matrix(7, [0, m, m, m], "fc", sub(7, b""))
    empty_labels = matrix(14, [1, 0], "labels", sub(12, b""))
    write(d, "repro-mat-d-overflow.mat", hdr + empty_fc + empty_labels)


if __name__ == "__main__":
    make_idx()
    make_snapshot()
    make_mat()
    for sub_dir in ("idx", "snapshot", "mat"):
        p = os.path.join(HERE, sub_dir)
        files = sorted(os.listdir(p))
        total = sum(os.path.getsize(os.path.join(p, f)) for f in files)
        print(f"{sub_dir}: {len(files)} files, {total} bytes")
