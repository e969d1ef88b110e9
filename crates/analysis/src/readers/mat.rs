//! Reading recorded activations and labels from MATLAB `.mat` files (format 5).
//!
//! Researchers often keep activations in files written by `scipy.io.savemat` or by
//! MATLAB's `save -v7` / `-v6`: one numeric variable per layer, shaped `[N, D]` or
//! `[N, C, H, W]`, plus a `labels` vector. This module lists those variables and reads
//! one of them into row-major `f32` (exactly what `scipy.io.loadmat(path)[name]` holds),
//! or reads a label vector exactly as `i64`.
//!
//! It is hand-written because the one pure-Rust reader on crates.io, `matfile` 0.5,
//! reads the whole file into memory and decompresses every variable before handing any
//! of them out; activation files can hold many large layers of which we want one. Here
//! a variable that is not asked for costs only the few bytes needed to learn its name
//! (for a compressed variable: the start of its zlib stream), and no size field read
//! from the file is trusted for an allocation: buffers grow only as real bytes arrive.
//!
//! Only format 5 is read (MATLAB 5 to 7.2, scipy's default). Format 4 and format 7.3
//! (HDF5) files are refused with an error that says how to re-save them.
//!
//! Layout reminders, from MathWorks' "MAT-File Format" document: a 128-byte header
//! (text, subsystem offset, version `0x0100`, endian indicator `IM`/`MI`), then data
//! elements, each an 8-byte tag (type, byte count) and its data padded to 8 bytes.
//! A tag whose data fits in 4 bytes may be packed with it into 8 bytes (the "small
//! data element" format). A variable is an `miMATRIX` element (or an `miCOMPRESSED`
//! one holding a zlib stream of an `miMATRIX` element), whose sub-elements are array
//! flags, dimensions, name, then the real part stored column-major in any numeric
//! type, often a narrower one than the class (MATLAB stores integral doubles compactly).

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use flate2::read::ZlibDecoder;

use cnnu_run::IoError;

/// One numeric variable, converted to `f32` to keep memory low.
#[derive(Debug, Clone, PartialEq)]
pub struct MatArray {
    /// The variable's name in the file.
    pub name: String,
    /// Its dimensions as stored (at least two for MATLAB arrays; scipy saves a 1-D
    /// array of length N as `[1, N]`).
    pub dims: Vec<usize>,
    /// The values in row-major (C) order, as `numpy` holds `scipy.io.loadmat`'s result.
    /// Integer classes wider than 24 bits and doubles are rounded to the nearest `f32`.
    pub data: Vec<f32>,
}

/// What [`list_variables`] reports about one variable, without reading its values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatVarInfo {
    /// The variable's name in the file.
    pub name: String,
    /// Its dimensions as stored; empty for MATLAB objects (`opaque`), which have none.
    pub dims: Vec<usize>,
    /// MATLAB's class name: `"double"`, `"single"`, `"int8"` … `"uint64"`, `"logical"`,
    /// `"char"`, `"cell"`, `"struct"`, `"object"`, `"sparse"`, `"function_handle"`,
    /// `"opaque"`, or `"unknown(N)"` for a class number this module does not know.
    /// Complex arrays report their numeric class; reading them is an error.
    pub class: String,
}

/// Why a MAT file or one of its variables could not be read. Every message starts
/// with the file's path.
#[derive(Debug, thiserror::Error)]
pub enum MatError {
    /// The file could not be opened or read.
    #[error(transparent)]
    Io(#[from] IoError),
    /// The file does not start with a MAT-file header.
    #[error("{}: not a MAT file: {reason}", path.display())]
    NotMat {
        /// The file.
        path: PathBuf,
        /// What was wrong with the header.
        reason: String,
    },
    /// A MAT version 4 file, which has no 128-byte header.
    #[error(
        "{}: this is a MAT v4 file, which is not supported; re-save it as v5: in Python \
         scipy.io.savemat(path, data, format=\"5\"), in MATLAB save(path, \"-v7\")",
        path.display()
    )]
    V4 {
        /// The file.
        path: PathBuf,
    },
    /// A MAT version 7.3 file, which is HDF5 inside.
    #[error(
        "{}: this is a MAT v7.3 (HDF5) file, which is not supported; re-save it as v5: \
         in Python scipy.io.savemat(path, data, format=\"5\") (after loading it with h5py \
         or mat73), in MATLAB save(path, \"-v7\")",
        path.display()
    )]
    V73 {
        /// The file.
        path: PathBuf,
    },
    /// The file ends before a header or variable it declares.
    #[error("{}: truncated MAT file: {detail}", path.display())]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Where it ends and what was expected.
        detail: String,
    },
    /// The file's structure is inconsistent (sizes, types or dimensions).
    #[error("{}: malformed MAT file: {detail}", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is inconsistent, and where.
        detail: String,
    },
    /// A compressed variable's zlib stream is corrupt or ends early.
    #[error("{}: bad zlib data in the compressed variable at byte {offset}: {detail}", path.display())]
    BadZlib {
        /// The file.
        path: PathBuf,
        /// Byte offset of the variable's `miCOMPRESSED` element.
        offset: u64,
        /// What the decompressor reported.
        detail: String,
    },
    /// No variable has the requested name.
    #[error("{}: no variable named {name:?}; {}", path.display(), describe_names(available))]
    NotFound {
        /// The file.
        path: PathBuf,
        /// The name asked for.
        name: String,
        /// The names of the variables in the file, in file order.
        available: Vec<String>,
    },
    /// The variable is not a numeric or logical array.
    #[error("{}: variable {name:?} is of class {class}, not a numeric array", path.display())]
    NotNumeric {
        /// The file.
        path: PathBuf,
        /// The variable.
        name: String,
        /// Its MATLAB class, as in [`MatVarInfo::class`].
        class: String,
    },
    /// The variable is complex; activations and labels are real.
    #[error("{}: variable {name:?} is complex; only real arrays can be read", path.display())]
    Complex {
        /// The file.
        path: PathBuf,
        /// The variable.
        name: String,
    },
    /// A label variable is not a vector.
    #[error(
        "{}: labels {name:?} have shape {dims:?}; expected [N], [1, N] or [N, 1]",
        path.display()
    )]
    LabelsShape {
        /// The file.
        path: PathBuf,
        /// The label variable.
        name: String,
        /// Its dimensions.
        dims: Vec<usize>,
    },
    /// A label value is not an integer representable as `i64`.
    #[error(
        "{}: labels {name:?}: value {value} at index {index} is not an integer in i64's range",
        path.display()
    )]
    LabelsNotInteger {
        /// The file.
        path: PathBuf,
        /// The label variable.
        name: String,
        /// Position of the first offending value.
        index: usize,
        /// The value, as text (it may be a float, NaN or a large unsigned integer).
        value: String,
    },
    /// The number of labels differs from the number of rows they should describe.
    /// Not produced by this module's readers, which see one variable at a time; it is
    /// here for callers pairing [`read_labels`] with [`read_variable`].
    #[error(
        "{}: labels {name:?} hold {labels} values but the activations have {rows} rows",
        path.display()
    )]
    LabelsLength {
        /// The file.
        path: PathBuf,
        /// The label variable.
        name: String,
        /// How many labels were read.
        labels: usize,
        /// How many rows (first dimension) the activations have.
        rows: usize,
    },
}

fn describe_names(names: &[String]) -> String {
    if names.is_empty() {
        "the file holds no variables".to_owned()
    } else {
        format!("the file holds: {}", names.join(", "))
    }
}

/// Lists the file's variables (name, dimensions, class) in file order, reading only
/// each variable's header.
pub fn list_variables(path: &Path) -> Result<Vec<MatVarInfo>, MatError> {
    let mat = MatFile::open(path)?;
    let mut out = Vec::new();
    mat.for_each_var(|header, _, _| {
        out.push(MatVarInfo {
            class: header.class_name(),
            name: header.name,
            dims: header.dims,
        });
        Ok(None::<()>)
    })?;
    Ok(out)
}

/// Reads the numeric (or logical) variable `name` as `f32`, in row-major order.
///
/// Variables before it in the file are skipped after reading their headers; the file
/// is not read past it, so a file damaged only after it still yields it. Memory is
/// the result's size (twice that, briefly, for arrays of up to 2^25 values, which are
/// reordered through a copy because that is much faster).
pub fn read_variable(path: &Path, name: &str) -> Result<MatArray, MatError> {
    let mat = MatFile::open(path)?;
    mat.find(name, |header, reader, ctx| {
        check_real_numeric(&header, ctx)?;
        let numel = ctx.numel(&header.dims)?;
        let mut data = Vec::new();
        read_real(reader, mat.big, numel, &mut data, Num::to_f32).map_err(|f| ctx.fail(f))?;
        let data = col_to_row_major(data, &header.dims);
        Ok(MatArray {
            name: header.name,
            dims: header.dims,
            data,
        })
    })
}

/// Reads the label vector `name` exactly, as `i64`.
///
/// Any numeric or logical class is accepted; the shape must be `[N]`, `[1, N]` or
/// `[N, 1]`, and every value an integer (a float like `2.0` is fine, `2.5` or NaN is
/// an error).
pub fn read_labels(path: &Path, name: &str) -> Result<Vec<i64>, MatError> {
    let mat = MatFile::open(path)?;
    mat.find(name, |header, reader, ctx| {
        check_real_numeric(&header, ctx)?;
        let is_vector = match header.dims.as_slice() {
            [_] => true,
            [a, b] => *a == 1 || *b == 1,
            _ => false,
        };
        if !is_vector {
            return Err(MatError::LabelsShape {
                path: ctx.path.to_owned(),
                name: header.name,
                dims: header.dims,
            });
        }
        let numel = ctx.numel(&header.dims)?;
        // Converted while reading, so the labels cost their 8 bytes each and never the 16 of
        // a `Num` (a small compressed file can hold tens of millions of labels); the first
        // value that is not an integer is remembered and reported after the read.
        let index = std::cell::Cell::new(0usize);
        let first_bad: std::cell::Cell<Option<(usize, Num)>> = std::cell::Cell::new(None);
        let mut labels = Vec::new();
        read_real(reader, mat.big, numel, &mut labels, |n| {
            let i = index.get();
            index.set(i + 1);
            n.to_i64().unwrap_or_else(|| {
                if first_bad.get().is_none() {
                    first_bad.set(Some((i, n)));
                }
                0
            })
        })
        .map_err(|f| ctx.fail(f))?;
        // A vector's column-major order is its row-major order: no reordering needed.
        match first_bad.get() {
            Some((index, n)) => Err(MatError::LabelsNotInteger {
                path: ctx.path.to_owned(),
                name: header.name.clone(),
                index,
                value: n.to_string(),
            }),
            None => Ok(labels),
        }
    })
}

// ------------------------------------------------------------------ format constants

const MI_INT8: u32 = 1;
const MI_UINT8: u32 = 2;
const MI_INT16: u32 = 3;
const MI_UINT16: u32 = 4;
const MI_INT32: u32 = 5;
const MI_UINT32: u32 = 6;
const MI_SINGLE: u32 = 7;
const MI_DOUBLE: u32 = 9;
const MI_INT64: u32 = 12;
const MI_UINT64: u32 = 13;
const MI_MATRIX: u32 = 14;
const MI_COMPRESSED: u32 = 15;
const MI_UTF8: u32 = 16;

const MX_SPARSE: u8 = 5;
const MX_DOUBLE: u8 = 6;
const MX_UINT64: u8 = 15;
const MX_OPAQUE: u8 = 17;

const FLAG_COMPLEX: u32 = 0x0800;
const FLAG_LOGICAL: u32 = 0x0200;

const HEADER_LEN: u64 = 128;
const HDF5_SIGNATURE: &[u8; 8] = b"\x89HDF\r\n\x1a\n";
/// MATLAB allows at most 32 dimensions; anything far beyond is a corrupt size field.
const MAX_DIMS: usize = 64;
/// MATLAB names are at most 63 characters; this only guards the allocation.
const MAX_NAME: usize = 4096;
/// Read chunk for the real part: a multiple of every element width.
const CHUNK: usize = 1 << 16;

fn mi_name(ty: u32) -> String {
    let name = match ty {
        MI_INT8 => "miINT8",
        MI_UINT8 => "miUINT8",
        MI_INT16 => "miINT16",
        MI_UINT16 => "miUINT16",
        MI_INT32 => "miINT32",
        MI_UINT32 => "miUINT32",
        MI_SINGLE => "miSINGLE",
        MI_DOUBLE => "miDOUBLE",
        MI_INT64 => "miINT64",
        MI_UINT64 => "miUINT64",
        MI_MATRIX => "miMATRIX",
        MI_COMPRESSED => "miCOMPRESSED",
        MI_UTF8 => "miUTF8",
        17 => "miUTF16",
        18 => "miUTF32",
        other => return format!("data type {other}"),
    };
    name.to_owned()
}

fn mi_width(ty: u32) -> Option<usize> {
    match ty {
        MI_INT8 | MI_UINT8 => Some(1),
        MI_INT16 | MI_UINT16 => Some(2),
        MI_INT32 | MI_UINT32 | MI_SINGLE => Some(4),
        MI_DOUBLE | MI_INT64 | MI_UINT64 => Some(8),
        _ => None,
    }
}

fn u16_at(b: [u8; 2], big: bool) -> u16 {
    if big {
        u16::from_be_bytes(b)
    } else {
        u16::from_le_bytes(b)
    }
}

fn u32_at(b: [u8; 4], big: bool) -> u32 {
    if big {
        u32::from_be_bytes(b)
    } else {
        u32::from_le_bytes(b)
    }
}

fn pad8(n: u64) -> u64 {
    (8 - n % 8) % 8
}

// ------------------------------------------------------------------ errors inside a variable

/// A failure while parsing one variable, before the file path and offset are known.
enum Fail {
    Io(io::Error),
    Bad(String),
}

impl From<io::Error> for Fail {
    fn from(e: io::Error) -> Self {
        Fail::Io(e)
    }
}

/// Where a variable lives, to turn a [`Fail`] into a [`MatError`] naming it.
struct Ctx<'a> {
    path: &'a Path,
    offset: u64,
    compressed: bool,
}

impl Ctx<'_> {
    fn fail(&self, f: Fail) -> MatError {
        let path = self.path.to_owned();
        match f {
            Fail::Bad(detail) => MatError::Malformed {
                path,
                detail: format!("variable at byte {}: {detail}", self.offset),
            },
            // The whole element was checked to lie inside the file, so running out of
            // bytes means the sizes inside disagree with the element's (or, compressed,
            // that the zlib stream stops short).
            Fail::Io(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                if self.compressed {
                    MatError::BadZlib {
                        path,
                        offset: self.offset,
                        detail: "the decompressed data ends before the sizes it declares".into(),
                    }
                } else {
                    MatError::Malformed {
                        path,
                        detail: format!(
                            "variable at byte {}: its parts run past the element's end",
                            self.offset
                        ),
                    }
                }
            }
            Fail::Io(e)
                if self.compressed
                    && matches!(
                        e.kind(),
                        io::ErrorKind::InvalidInput | io::ErrorKind::InvalidData
                    ) =>
            {
                MatError::BadZlib {
                    path,
                    offset: self.offset,
                    detail: e.to_string(),
                }
            }
            Fail::Io(source) => IoError { path, source }.into(),
        }
    }

    fn numel(&self, dims: &[usize]) -> Result<usize, MatError> {
        dims.iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| self.fail(Fail::Bad(format!("dimensions {dims:?} overflow"))))
    }
}

fn check_real_numeric(header: &VarHeader, ctx: &Ctx) -> Result<(), MatError> {
    if !(MX_DOUBLE..=MX_UINT64).contains(&header.class) {
        return Err(MatError::NotNumeric {
            path: ctx.path.to_owned(),
            name: header.name.clone(),
            class: header.class_name(),
        });
    }
    if header.complex {
        return Err(MatError::Complex {
            path: ctx.path.to_owned(),
            name: header.name.clone(),
        });
    }
    Ok(())
}

// ------------------------------------------------------------------ file and elements

struct MatFile {
    path: PathBuf,
    file: File,
    len: u64,
    big: bool,
}

/// A top-level data element, located but not read.
struct Element {
    offset: u64,
    ty: u32,
    size: u64,
}

/// A variable's header: everything before its real part.
struct VarHeader {
    name: String,
    class: u8,
    logical: bool,
    complex: bool,
    dims: Vec<usize>,
}

impl VarHeader {
    fn class_name(&self) -> String {
        let name = match self.class {
            MX_SPARSE => "sparse",
            c if self.logical && (MX_DOUBLE..=MX_UINT64).contains(&c) => "logical",
            1 => "cell",
            2 => "struct",
            3 => "object",
            4 => "char",
            6 => "double",
            7 => "single",
            8 => "int8",
            9 => "uint8",
            10 => "int16",
            11 => "uint16",
            12 => "int32",
            13 => "uint32",
            14 => "int64",
            15 => "uint64",
            16 => "function_handle",
            MX_OPAQUE => "opaque",
            other => return format!("unknown({other})"),
        };
        name.to_owned()
    }
}

/// Reads until `buf` is full or the reader ends; returns how many bytes were read.
fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Whether the first four bytes are a plausible v4 MOPT word (type code M*1000 +
/// O*100 + P*10 + T, written as an int32 in either byte order). v5 files start with
/// text, which never contains a zero byte there.
fn looks_like_v4(head: &[u8]) -> bool {
    let Some(first) = head.get(..4) else {
        return false;
    };
    let Ok(word) = <[u8; 4]>::try_from(first) else {
        return false;
    };
    if !word.contains(&0) {
        return false;
    }
    [i32::from_le_bytes(word), i32::from_be_bytes(word)]
        .into_iter()
        .any(|v| {
            (0..5000).contains(&v)
                && v / 1000 <= 4
                && (v / 100) % 10 == 0
                && (v / 10) % 10 <= 5
                && v % 10 <= 2
        })
}

impl MatFile {
    fn open(path: &Path) -> Result<Self, MatError> {
        let io_err = IoError::at(path);
        let not_mat = |reason: &str| MatError::NotMat {
            path: path.to_owned(),
            reason: reason.to_owned(),
        };
        let mut file = File::open(path).map_err(io_err)?;
        let len = file.metadata().map_err(io_err)?.len();
        let mut head = [0u8; HEADER_LEN as usize];
        let n = read_up_to(&mut file, &mut head).map_err(io_err)?;
        let head = head.get(..n).unwrap_or_default();

        if head.starts_with(b"MATLAB 7.3") {
            return Err(MatError::V73 {
                path: path.to_owned(),
            });
        }
        if len >= 520 {
            let mut sig = [0u8; 8];
            file.seek(SeekFrom::Start(512)).map_err(io_err)?;
            file.read_exact(&mut sig).map_err(io_err)?;
            if &sig == HDF5_SIGNATURE {
                return Err(MatError::V73 {
                    path: path.to_owned(),
                });
            }
        }
        if looks_like_v4(head) {
            return Err(MatError::V4 {
                path: path.to_owned(),
            });
        }
        if head.is_empty() {
            return Err(not_mat("the file is empty"));
        }
        let (Some(version), Some(endian)) = (head.get(124..126), head.get(126..128)) else {
            return Err(if head.starts_with(b"MATLAB") {
                MatError::Truncated {
                    path: path.to_owned(),
                    detail: format!("{len} bytes, shorter than the 128-byte header"),
                }
            } else {
                not_mat(&format!(
                    "{len} bytes, shorter than the 128-byte MAT header"
                ))
            });
        };
        let big = match endian {
            b"IM" => false,
            b"MI" => true,
            _ => {
                return Err(not_mat(
                    "no endian indicator (\"IM\" or \"MI\") at byte 126",
                ));
            }
        };
        let version = u16_at([version[0], version[1]], big);
        match version {
            0x0100 => Ok(MatFile {
                path: path.to_owned(),
                file,
                len,
                big,
            }),
            0x0200 => Err(MatError::V73 {
                path: path.to_owned(),
            }),
            v => Err(not_mat(&format!(
                "unknown version 0x{v:04x} (v5 files have 0x0100)"
            ))),
        }
    }

    fn io_err(&self, source: io::Error) -> MatError {
        IoError::at(&self.path)(source).into()
    }

    fn truncated(&self, detail: String) -> MatError {
        MatError::Truncated {
            path: self.path.clone(),
            detail,
        }
    }

    /// The element starting at `pos`, and where the next one starts; `None` at the end.
    fn element_at(&self, pos: u64) -> Result<Option<(Element, u64)>, MatError> {
        let left = self.len.saturating_sub(pos);
        if left == 0 {
            return Ok(None);
        }
        let mut f = &self.file;
        f.seek(SeekFrom::Start(pos)).map_err(|e| self.io_err(e))?;
        let mut tag = [0u8; 8];
        let n = read_up_to(&mut f, &mut tag).map_err(|e| self.io_err(e))?;
        if n < 8 {
            // Some writers pad the file's end; a partial tag with content is damage.
            if tag.iter().all(|&b| b == 0) {
                return Ok(None);
            }
            return Err(self.truncated(format!(
                "the file ends inside the data element tag at byte {pos}"
            )));
        }
        let word = u32_at([tag[0], tag[1], tag[2], tag[3]], self.big);
        if word >> 16 != 0 {
            // A small data element at top level holds no variable; step over it.
            let el = Element {
                offset: pos,
                ty: word & 0xFFFF,
                size: 0,
            };
            return Ok(Some((el, pos + 8)));
        }
        let size = u64::from(u32_at([tag[4], tag[5], tag[6], tag[7]], self.big));
        if size > left - 8 {
            return Err(self.truncated(format!(
                "the {} element at byte {pos} declares {size} bytes but the file has only {} more",
                mi_name(word),
                left - 8
            )));
        }
        let end = pos + 8 + size;
        // Compressed elements are not padded; others are, to 8 bytes.
        let next = if word == MI_COMPRESSED {
            end
        } else {
            end + pad8(size)
        };
        Ok(Some((
            Element {
                offset: pos,
                ty: word,
                size,
            },
            next,
        )))
    }

    /// A reader over an `miMATRIX` element's content: the file region itself, or a
    /// zlib stream decompressed on demand.
    fn open_content(&self, el: &Element) -> Result<Box<dyn Read + '_>, Fail> {
        let mut f = &self.file;
        f.seek(SeekFrom::Start(el.offset + 8))?;
        let region = f.take(el.size);
        if el.ty == MI_MATRIX {
            return Ok(Box::new(BufReader::with_capacity(CHUNK, region)));
        }
        let mut z = ZlibDecoder::new(region);
        let inner = read_tag(&mut z, self.big)?;
        match inner {
            Tag {
                ty: MI_MATRIX,
                size,
                small: None,
            } => Ok(Box::new(z.take(size))),
            Tag { ty, .. } => Err(Fail::Bad(format!(
                "the compressed element holds {}, not miMATRIX",
                mi_name(ty)
            ))),
        }
    }

    /// Calls `visit` on each named variable's header, with a reader positioned at the
    /// variable's real part, until `visit` returns something.
    fn for_each_var<T>(
        &self,
        mut visit: impl FnMut(VarHeader, &mut dyn Read, &Ctx) -> Result<Option<T>, MatError>,
    ) -> Result<Option<T>, MatError> {
        let mut pos = HEADER_LEN;
        while let Some((el, next)) = self.element_at(pos)? {
            pos = next;
            if !(el.ty == MI_MATRIX || el.ty == MI_COMPRESSED) || el.size == 0 {
                continue;
            }
            let ctx = Ctx {
                path: &self.path,
                offset: el.offset,
                compressed: el.ty == MI_COMPRESSED,
            };
            let mut reader = self.open_content(&el).map_err(|f| ctx.fail(f))?;
            let header = read_header(&mut reader, self.big).map_err(|f| ctx.fail(f))?;
            // MATLAB's subsystem data (function handles, objects) is an unnamed
            // variable; it is not one of the user's.
            if header.name.is_empty() {
                continue;
            }
            if let Some(found) = visit(header, &mut reader, &ctx)? {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    /// Runs `read` on the first variable called `name`, or reports the names present.
    fn find<T>(
        &self,
        name: &str,
        mut read: impl FnMut(VarHeader, &mut dyn Read, &Ctx) -> Result<T, MatError>,
    ) -> Result<T, MatError> {
        let mut seen = Vec::new();
        let found = self.for_each_var(|header, reader, ctx| {
            if header.name == name {
                read(header, reader, ctx).map(Some)
            } else {
                seen.push(header.name);
                Ok(None)
            }
        })?;
        found.ok_or_else(|| MatError::NotFound {
            path: self.path.clone(),
            name: name.to_owned(),
            available: seen,
        })
    }
}

// ------------------------------------------------------------------ sub-elements

struct Tag {
    ty: u32,
    size: u64,
    /// The data of a small data element, packed into the tag.
    small: Option<[u8; 4]>,
}

fn read_tag(r: &mut (impl Read + ?Sized), big: bool) -> Result<Tag, Fail> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b)?;
    let word = u32_at([b[0], b[1], b[2], b[3]], big);
    let rest = [b[4], b[5], b[6], b[7]];
    if word >> 16 != 0 {
        let size = word >> 16;
        if size > 4 {
            return Err(Fail::Bad(format!(
                "small data element declares {size} bytes (at most 4)"
            )));
        }
        return Ok(Tag {
            ty: word & 0xFFFF,
            size: u64::from(size),
            small: Some(rest),
        });
    }
    Ok(Tag {
        ty: word,
        size: u64::from(u32_at(rest, big)),
        small: None,
    })
}

fn skip(r: &mut (impl Read + ?Sized), n: u64) -> Result<(), Fail> {
    let copied = io::copy(&mut r.take(n), &mut io::sink())?;
    if copied < n {
        return Err(Fail::Io(io::ErrorKind::UnexpectedEof.into()));
    }
    Ok(())
}

/// Reads one whole small sub-element (flags, dimensions, name), refusing more than
/// `cap` bytes, and steps over its padding.
fn read_sub(
    r: &mut (impl Read + ?Sized),
    big: bool,
    cap: usize,
    what: &str,
) -> Result<(u32, Vec<u8>), Fail> {
    let tag = read_tag(r, big)?;
    if let Some(bytes) = tag.small {
        let data = bytes.get(..tag.size as usize).unwrap_or_default().to_vec();
        return Ok((tag.ty, data));
    }
    let size = usize::try_from(tag.size)
        .ok()
        .filter(|&s| s <= cap)
        .ok_or_else(|| {
            Fail::Bad(format!(
                "the {what} sub-element declares {} bytes (at most {cap} expected)",
                tag.size
            ))
        })?;
    let mut data = vec![0u8; size];
    r.read_exact(&mut data)?;
    skip(r, pad8(tag.size))?;
    Ok((tag.ty, data))
}

fn read_header(r: &mut (impl Read + ?Sized), big: bool) -> Result<VarHeader, Fail> {
    let (ty, flags) = read_sub(r, big, 64, "array flags")?;
    let Some(&[a, b, c, d]) = flags.get(..4).and_then(|s| <&[u8; 4]>::try_from(s).ok()) else {
        return Err(Fail::Bad(format!(
            "array flags are {} bytes, not 8",
            flags.len()
        )));
    };
    if ty != MI_UINT32 {
        return Err(Fail::Bad(format!(
            "array flags are {}, not miUINT32",
            mi_name(ty)
        )));
    }
    let word = u32_at([a, b, c, d], big);
    let class = (word & 0xFF) as u8;
    let complex = word & FLAG_COMPLEX != 0;
    let logical = word & FLAG_LOGICAL != 0;

    let mut dims = Vec::new();
    // Objects carry no dimensions: their name follows the flags directly.
    if class != MX_OPAQUE {
        let (ty, raw) = read_sub(r, big, 4 * MAX_DIMS, "dimensions")?;
        if !(ty == MI_INT32 || ty == MI_UINT32) || raw.len() % 4 != 0 {
            return Err(Fail::Bad(format!(
                "dimensions are {} bytes of {}, not miINT32 values",
                raw.len(),
                mi_name(ty)
            )));
        }
        for c in raw.chunks_exact(4) {
            let v = u32_at([c[0], c[1], c[2], c[3]], big);
            let v = if ty == MI_INT32 {
                i32::try_from(v).map_or(-1, i64::from)
            } else {
                i64::from(v)
            };
            let d =
                usize::try_from(v).map_err(|_| Fail::Bad(format!("negative dimension {}", v)))?;
            dims.push(d);
        }
    }
    let (ty, raw) = read_sub(r, big, MAX_NAME, "array name")?;
    if !matches!(ty, MI_INT8 | MI_UINT8 | MI_UTF8) {
        return Err(Fail::Bad(format!(
            "array name is {}, not text",
            mi_name(ty)
        )));
    }
    let text = raw.split(|&b| b == 0).next().unwrap_or_default();
    let name = String::from_utf8_lossy(text).into_owned();
    Ok(VarHeader {
        name,
        class,
        logical,
        complex,
        dims,
    })
}

// ------------------------------------------------------------------ numbers

/// One stored value, kept in its own kind so labels convert exactly.
#[derive(Clone, Copy, Debug)]
enum Num {
    I(i64),
    U(u64),
    F(f64),
}

/// 2^63: i64 holds -2^63 but not 2^63, hence a half-open range.
const TWO_POW_63: f64 = 9_223_372_036_854_775_808.0;

impl Num {
    fn to_f32(self) -> f32 {
        match self {
            Num::I(v) => v as f32,
            Num::U(v) => v as f32,
            Num::F(v) => v as f32,
        }
    }

    fn to_i64(self) -> Option<i64> {
        match self {
            Num::I(v) => Some(v),
            Num::U(v) => i64::try_from(v).ok(),
            Num::F(v) if v.fract() == 0.0 && (-TWO_POW_63..TWO_POW_63).contains(&v) => {
                Some(v as i64)
            }
            Num::F(_) => None,
        }
    }
}

impl std::fmt::Display for Num {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Num::I(v) => write!(f, "{v}"),
            Num::U(v) => write!(f, "{v}"),
            Num::F(v) => write!(f, "{v}"),
        }
    }
}

/// Decodes whole values of type `ty` from `bytes`; the caller passes a multiple of
/// the width.
fn decode(bytes: &[u8], ty: u32, big: bool, mut out: impl FnMut(Num)) {
    macro_rules! each {
        ($w:literal, $t:ty, $wrap:expr) => {
            for c in bytes.chunks_exact($w) {
                let mut a = [0u8; $w];
                a.copy_from_slice(c);
                let v = if big {
                    <$t>::from_be_bytes(a)
                } else {
                    <$t>::from_le_bytes(a)
                };
                out($wrap(v));
            }
        };
    }
    match ty {
        MI_INT8 => each!(1, i8, |v| Num::I(i64::from(v))),
        MI_UINT8 => each!(1, u8, |v| Num::U(u64::from(v))),
        MI_INT16 => each!(2, i16, |v| Num::I(i64::from(v))),
        MI_UINT16 => each!(2, u16, |v| Num::U(u64::from(v))),
        MI_INT32 => each!(4, i32, |v| Num::I(i64::from(v))),
        MI_UINT32 => each!(4, u32, |v| Num::U(u64::from(v))),
        MI_SINGLE => each!(4, f32, |v| Num::F(f64::from(v))),
        MI_DOUBLE => each!(8, f64, Num::F),
        MI_INT64 => each!(8, i64, Num::I),
        MI_UINT64 => each!(8, u64, Num::U),
        _ => {}
    }
}

/// Grows `v` for `incoming` more values: doubling as data arrives, never past `total`,
/// so a lying size field costs nothing until real bytes back it.
fn grow<T>(v: &mut Vec<T>, incoming: usize, total: usize) {
    let need = v.len().saturating_add(incoming);
    if need > v.capacity() {
        let target = v.capacity().saturating_mul(2).clamp(need, total.max(need));
        v.reserve_exact(target - v.len());
    }
}

/// Reads the real part of a variable with `numel` values into `out`, in stored
/// (column-major) order.
fn read_real<T>(
    r: &mut (impl Read + ?Sized),
    big: bool,
    numel: usize,
    out: &mut Vec<T>,
    conv: impl Fn(Num) -> T,
) -> Result<(), Fail> {
    let tag = read_tag(r, big)?;
    let width = mi_width(tag.ty).ok_or_else(|| {
        Fail::Bad(format!(
            "the real part is stored as {}, not numbers",
            mi_name(tag.ty)
        ))
    })?;
    let want = (numel as u64).checked_mul(width as u64);
    if want != Some(tag.size) {
        return Err(Fail::Bad(format!(
            "the real part holds {} bytes of {}, but {numel} values need {}",
            tag.size,
            mi_name(tag.ty),
            numel.saturating_mul(width)
        )));
    }
    if let Some(bytes) = tag.small {
        let bytes = bytes.get(..tag.size as usize).unwrap_or_default();
        grow(out, numel, numel);
        decode(bytes, tag.ty, big, |n| out.push(conv(n)));
        return Ok(());
    }
    let mut buf = vec![0u8; CHUNK.min(numel.saturating_mul(width))];
    let mut left = tag.size;
    while left > 0 {
        let n = (CHUNK as u64).min(left) as usize;
        let chunk = buf
            .get_mut(..n)
            .ok_or_else(|| Fail::Bad("internal chunk size".into()))?;
        r.read_exact(chunk)?;
        grow(out, n / width, numel);
        decode(chunk, tag.ty, big, |v| out.push(conv(v)));
        left -= n as u64;
    }
    Ok(())
}

/// Above this many values, reordering works in place rather than through a copy.
///
/// A copy is about ten times faster, but it doubles the memory of a layer that may be
/// most of what the machine has; below 2^25 values (128 MiB of `f32`) the copy is
/// cheap enough not to matter.
const COPY_LIMIT: usize = 1 << 25;

/// Reorders column-major `data` of shape `dims` into row-major.
fn col_to_row_major<T: Copy + Default>(data: Vec<T>, dims: &[usize]) -> Vec<T> {
    if data.len() <= COPY_LIMIT {
        reorder_by_copy(data, dims)
    } else {
        let mut data = data;
        reorder_in_place(&mut data, dims);
        data
    }
}

/// The axes that change the order (length-1 axes do not), if the reordering is not
/// the identity and `dims` agree with `len`.
fn moving_axes(dims: &[usize], len: usize) -> Option<Vec<usize>> {
    let d: Vec<usize> = dims.iter().copied().filter(|&x| x != 1).collect();
    (d.len() >= 2 && d.iter().product::<usize>() == len && len > 0).then_some(d)
}

/// Row-major strides of shape `d`.
fn row_strides(d: &[usize]) -> Vec<usize> {
    let mut stride = vec![1usize; d.len()];
    for k in (1..d.len()).rev() {
        stride[k - 1] = stride[k] * d[k];
    }
    stride
}

/// Copies column-major `src` into `dst` in row-major order, walking `src` in order.
/// For one row of a layer, small enough to stay in cache.
fn scatter_row_major<T: Copy>(src: &[T], d: &[usize], dst: &mut [T]) {
    let stride = row_strides(d);
    let mut idx = vec![0usize; d.len()];
    let mut q = 0usize;
    for &v in src {
        if let Some(slot) = dst.get_mut(q) {
            *slot = v;
        }
        // Column-major order: the first axis moves fastest.
        for k in 0..d.len() {
            idx[k] += 1;
            q += stride[k];
            if idx[k] < d[k] {
                break;
            }
            q -= d[k] * stride[k];
            idx[k] = 0;
        }
    }
}

/// Reorders through a copy: a tiled 2-D transpose that brings the first axis
/// (fastest in MATLAB's order, slowest in ours) to the front, then a reordering of
/// each row's remaining axes.
fn reorder_by_copy<T: Copy + Default>(src: Vec<T>, dims: &[usize]) -> Vec<T> {
    let Some(d) = moving_axes(dims, src.len()) else {
        return src;
    };
    let (n, rest) = (d[0], &d[1..]);
    let r = src.len() / n;
    // Column-major [n, rest] is row-major [r, n]; transpose it to row-major [n, r].
    const TILE: usize = 32;
    let mut dst = vec![T::default(); src.len()];
    for r0 in (0..r).step_by(TILE) {
        for i0 in (0..n).step_by(TILE) {
            for row in r0..(r0 + TILE).min(r) {
                for i in i0..(i0 + TILE).min(n) {
                    dst[i * r + row] = src[row * n + i];
                }
            }
        }
    }
    // Each row of r values still has its axes in column-major order.
    if rest.len() >= 2 {
        let mut scratch = vec![T::default(); r];
        for row in dst.chunks_exact_mut(r) {
            scratch.copy_from_slice(row);
            scatter_row_major(&scratch, rest, row);
        }
    }
    dst
}

/// Reorders in place, following the permutation's cycles with one bit per value to
/// mark those already moved. Needs no second copy, at the price of random access.
fn reorder_in_place<T: Copy>(data: &mut [T], dims: &[usize]) {
    let Some(d) = moving_axes(dims, data.len()) else {
        return;
    };
    let n = data.len();
    let stride = row_strides(&d);
    // Column-major index p holds the value whose row-major index is dest(p).
    let dest = |mut p: usize| {
        let mut q = 0;
        for (&dk, &sk) in d.iter().zip(&stride) {
            q += (p % dk) * sk;
            p /= dk;
        }
        q
    };
    let mut moved = vec![0u64; n.div_ceil(64)];
    for start in 0..n {
        if moved[start / 64] >> (start % 64) & 1 == 1 {
            continue;
        }
        let mut carry = data[start];
        let mut p = start;
        loop {
            let q = dest(p);
            moved[q / 64] |= 1 << (q % 64);
            std::mem::swap(&mut carry, &mut data[q]);
            if q == start {
                break;
            }
            p = q;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    macro_rules! fixture {
        ($name:literal) => {
            Path::new(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/data/mat/",
                $name
            ))
        };
    }

    /// The scipy-written files with the same content: uncompressed, compressed, and
    /// big-endian.
    fn acts_files() -> [&'static Path; 3] {
        [
            fixture!("acts.mat"),
            fixture!("acts_z.mat"),
            fixture!("acts_be.mat"),
        ]
    }

    /// A scratch file, removed when dropped.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(tag: &str, bytes: &[u8]) -> Self {
            let path =
                std::env::temp_dir().join(format!("cnnu-mat-{}-{tag}.mat", std::process::id()));
            std::fs::write(&path, bytes).expect("write scratch file");
            Scratch(path)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn arange(n: usize) -> Vec<f32> {
        (0..n).map(|i| i as f32).collect()
    }

    #[test]
    fn lists_names_dims_and_classes() {
        for path in acts_files() {
            let vars = list_variables(path).unwrap();
            let names: Vec<&str> = vars.iter().map(|v| v.name.as_str()).collect();
            assert_eq!(
                names,
                [
                    "fc",
                    "conv1",
                    "cube",
                    "labels",
                    "labels_col",
                    "labels_f",
                    "labels_f32",
                    "labels_i8",
                    "labels_i16",
                    "labels_u16",
                    "labels_i32",
                    "labels_u32",
                    "labels_u64",
                    "labels_big",
                    "labels_frac",
                    "labels_nan",
                    "labels_2d",
                    "mask",
                    "i16",
                    "u32",
                    "empty",
                    "note",
                    "cellvar",
                    "st",
                    "z",
                    "sp"
                ],
                "{}",
                path.display()
            );
            let info = |n: &str| vars.iter().find(|v| v.name == n).unwrap();
            let check = |n: &str, dims: &[usize], class: &str| {
                assert_eq!(info(n).dims, dims, "{n} in {}", path.display());
                assert_eq!(info(n).class, class, "{n} in {}", path.display());
            };
            check("fc", &[6, 4], "single");
            check("conv1", &[2, 3, 4, 5], "double");
            check("labels", &[1, 6], "int64");
            check("labels_col", &[6, 1], "uint8");
            check("labels_i8", &[1, 6], "int8");
            check("labels_u64", &[1, 2], "uint64");
            check("mask", &[1, 3], "logical");
            check("empty", &[0, 3], "single");
            check("note", &[1, 5], "char");
            check("cellvar", &[1, 2], "cell");
            check("st", &[1, 1], "struct");
            check("z", &[1, 2], "double");
            check("sp", &[3, 3], "sparse");
        }
    }

    #[test]
    fn reads_float32_n_by_d() {
        let want: Vec<f32> = (0..24).map(|i| i as f32 * 0.5 - 3.0).collect();
        for path in acts_files() {
            let a = read_variable(path, "fc").unwrap();
            assert_eq!(a.name, "fc");
            assert_eq!(a.dims, [6, 4]);
            assert_eq!(a.data, want, "{}", path.display());
        }
    }

    #[test]
    fn reads_float64_nchw_in_row_major_order() {
        for path in acts_files() {
            let a = read_variable(path, "conv1").unwrap();
            assert_eq!(a.dims, [2, 3, 4, 5]);
            assert_eq!(a.data, arange(120), "{}", path.display());
            let c = read_variable(path, "cube").unwrap();
            assert_eq!(c.dims, [2, 3, 4]);
            assert_eq!(c.data, arange(24), "{}", path.display());
        }
    }

    #[test]
    fn reads_other_numeric_classes() {
        for path in acts_files() {
            let i16v = read_variable(path, "i16").unwrap();
            assert_eq!(
                (i16v.dims, i16v.data),
                (vec![1, 2], vec![-32768.0, 32767.0])
            );
            let u32v = read_variable(path, "u32").unwrap();
            assert_eq!(u32v.data, [0.0, 4_294_967_295u32 as f32]);
            let mask = read_variable(path, "mask").unwrap();
            assert_eq!((mask.dims, mask.data), (vec![1, 3], vec![1.0, 0.0, 1.0]));
            let empty = read_variable(path, "empty").unwrap();
            assert_eq!((empty.dims, empty.data), (vec![0, 3], vec![]));
            let col = read_variable(path, "labels_col").unwrap();
            assert_eq!(
                (col.dims, col.data),
                (vec![6, 1], vec![2.0, 7.0, 1.0, 8.0, 2.0, 8.0])
            );
        }
    }

    #[test]
    fn reads_labels_of_every_class_and_orientation() {
        for path in acts_files() {
            let labels = |n: &str| read_labels(path, n).unwrap();
            assert_eq!(labels("labels"), [3, 1, 4, 1, 5, 9]);
            assert_eq!(labels("labels_col"), [2, 7, 1, 8, 2, 8]);
            assert_eq!(labels("labels_f"), [0, 1, 2, -1, 5, 6]);
            assert_eq!(labels("labels_f32"), [4, 3]);
            assert_eq!(labels("labels_i8"), [-3, -2, -1, 0, 1, 2]);
            assert_eq!(labels("labels_i16"), [-300, 0, 300]);
            assert_eq!(labels("labels_u16"), [0, 65535]);
            assert_eq!(labels("labels_i32"), [-70000, 70000]);
            assert_eq!(labels("labels_u32"), [4_000_000_000]);
            assert_eq!(labels("labels_u64"), [10, i64::MAX]);
            assert_eq!(labels("mask"), [1, 0, 1]);
        }
    }

    #[test]
    fn rejects_bad_labels() {
        for path in acts_files() {
            for (name, index, value) in [
                ("labels_frac", 1, "0.5"),
                ("labels_nan", 1, "NaN"),
                ("labels_big", 0, "18446744073709551615"),
            ] {
                match read_labels(path, name) {
                    Err(MatError::LabelsNotInteger {
                        index: i, value: v, ..
                    }) => {
                        assert_eq!((i, v.as_str()), (index, value), "{name}");
                    }
                    other => panic!("{name}: {other:?}"),
                }
            }
            match read_labels(path, "labels_2d") {
                Err(MatError::LabelsShape { dims, .. }) => assert_eq!(dims, [2, 3]),
                other => panic!("{other:?}"),
            }
            assert!(matches!(
                read_labels(path, "conv1"),
                Err(MatError::LabelsShape { .. })
            ));
        }
    }

    #[test]
    fn reads_compact_storage_and_small_elements() {
        // Doubles stored as miUINT8 / miINT16 / miINT8, a 3-byte real part packed in
        // its tag, 2- and 4-character names packed likewise, and one compressed
        // variable: what MATLAB writes and scipy does not.
        for path in [fixture!("handmade.mat"), fixture!("handmade_be.mat")] {
            let read = |n: &str| read_variable(path, n).unwrap();
            let cd = read("cd");
            assert_eq!(
                (cd.dims, cd.data),
                (vec![2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 250.0])
            );
            let negs = read("negs");
            assert_eq!(
                (negs.dims, negs.data),
                (vec![1, 4], vec![-1000.0, 0.0, 7.0, 32000.0])
            );
            let tiny = read("tiny");
            assert_eq!((tiny.dims, tiny.data), (vec![1, 3], vec![9.0, 8.0, 7.0]));
            let zc = read("zc");
            assert_eq!(
                (zc.dims, zc.data),
                (vec![3, 2], vec![-1.0, 2.0, 3.0, -4.0, 5.0, 127.0])
            );
            assert_eq!(read_labels(path, "lbl_compact").unwrap(), [0, 1, 2, 1, 0]);
            let classes: Vec<String> = list_variables(path)
                .unwrap()
                .into_iter()
                .map(|v| v.class)
                .collect();
            assert_eq!(classes, ["double"; 5]);
        }
    }

    #[test]
    fn refuses_non_numeric_and_complex() {
        for path in acts_files() {
            for (name, class) in [
                ("note", "char"),
                ("cellvar", "cell"),
                ("st", "struct"),
                ("sp", "sparse"),
            ] {
                for err in [
                    read_variable(path, name).unwrap_err(),
                    read_labels(path, name).unwrap_err(),
                ] {
                    match &err {
                        MatError::NotNumeric {
                            class: c, name: n, ..
                        } => assert_eq!((n.as_str(), c.as_str()), (name, class)),
                        other => panic!("{name}: {other:?}"),
                    }
                    assert!(err.to_string().contains(class), "{err}");
                }
            }
            assert!(matches!(
                read_variable(path, "z"),
                Err(MatError::Complex { .. })
            ));
            assert!(matches!(
                read_labels(path, "z"),
                Err(MatError::Complex { .. })
            ));
        }
    }

    #[test]
    fn unknown_name_lists_the_variables() {
        for path in acts_files() {
            let err = read_variable(path, "conv9").unwrap_err();
            let MatError::NotFound { available, .. } = &err else {
                panic!("{err:?}")
            };
            assert_eq!(available.len(), 26);
            let msg = err.to_string();
            assert!(msg.starts_with(&path.display().to_string()), "{msg}");
            assert!(
                msg.contains("\"conv9\"") && msg.contains("fc, conv1, cube, labels,"),
                "{msg}"
            );
            assert!(matches!(
                read_labels(path, "lbl"),
                Err(MatError::NotFound { .. })
            ));
        }
    }

    #[test]
    fn refuses_v73_and_v4_with_advice() {
        let path = fixture!("fake_v73.mat");
        let err = list_variables(path).unwrap_err();
        assert!(matches!(err, MatError::V73 { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(
            msg.contains("format=\"5\"") && msg.contains("save(path, \"-v7\")"),
            "{msg}"
        );
        // Recognised by the HDF5 signature alone, and by the version word alone.
        let raw = std::fs::read(path).unwrap();
        let mut no_text = raw.clone();
        no_text[..10].copy_from_slice(b"XXXXXXXXXX");
        let f = Scratch::new("v73-sig", &no_text);
        assert!(matches!(
            read_variable(&f.0, "x"),
            Err(MatError::V73 { .. })
        ));
        let f = Scratch::new("v73-version", &no_text[..128]);
        assert!(matches!(
            read_variable(&f.0, "x"),
            Err(MatError::V73 { .. })
        ));

        let err = read_variable(fixture!("v4.mat"), "x").unwrap_err();
        assert!(matches!(err, MatError::V4 { .. }), "{err:?}");
        assert!(err.to_string().contains("format=\"5\""));
    }

    #[test]
    fn truncated_file() {
        let path = fixture!("truncated.mat");
        assert!(matches!(
            list_variables(path),
            Err(MatError::Truncated { .. })
        ));
        // The last variable is cut; those before it are intact and readable.
        assert!(matches!(
            read_variable(path, "sp"),
            Err(MatError::Truncated { .. })
        ));
        assert_eq!(read_variable(path, "cube").unwrap().data, arange(24));
        // Cut inside the header.
        let raw = std::fs::read(fixture!("acts.mat")).unwrap();
        let f = Scratch::new("short-header", &raw[..100]);
        assert!(matches!(
            list_variables(&f.0),
            Err(MatError::Truncated { .. })
        ));
        // Cut inside a tag.
        let f = Scratch::new("short-tag", &raw[..132]);
        assert!(matches!(
            list_variables(&f.0),
            Err(MatError::Truncated { .. })
        ));
    }

    #[test]
    fn not_a_mat_file() {
        let f = Scratch::new("text", b"just some text that is certainly not a MAT file, long enough to fill a header ......................................................");
        assert!(matches!(list_variables(&f.0), Err(MatError::NotMat { .. })));
        let f = Scratch::new("empty", b"");
        assert!(matches!(list_variables(&f.0), Err(MatError::NotMat { .. })));
        let missing = Path::new("/nonexistent/cnnu/acts.mat");
        let err = read_variable(missing, "fc").unwrap_err();
        assert!(matches!(err, MatError::Io(_)));
        assert!(err.to_string().starts_with("/nonexistent/cnnu/acts.mat: "));
    }

    #[test]
    fn bad_zlib_stream() {
        let mut raw = std::fs::read(fixture!("acts_z.mat")).unwrap();
        // The first variable's zlib header (0x78 ..) follows its 8-byte tag.
        assert_eq!(raw[136], 0x78);
        raw[136] = 0;
        raw[137] = 0;
        let f = Scratch::new("badzlib", &raw);
        let err = list_variables(&f.0).unwrap_err();
        assert!(
            matches!(err, MatError::BadZlib { offset: 128, .. }),
            "{err:?}"
        );
    }

    /// Little-endian element builders for hand-made files.
    fn sub(ty: u32, data: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend(ty.to_le_bytes());
        v.extend((data.len() as u32).to_le_bytes());
        v.extend(data);
        v.resize(v.len() + pad8(data.len() as u64) as usize, 0);
        v
    }

    fn matrix(class: u32, dims: &[i32], name: &str, real: Vec<u8>) -> Vec<u8> {
        let mut flags = class.to_le_bytes().to_vec();
        flags.extend([0; 4]);
        let dims: Vec<u8> = dims.iter().flat_map(|d| d.to_le_bytes()).collect();
        let mut body = sub(MI_UINT32, &flags);
        body.extend(sub(MI_INT32, &dims));
        body.extend(sub(MI_INT8, name.as_bytes()));
        body.extend(real);
        sub(MI_MATRIX, &body)
    }

    fn file(elements: &[Vec<u8>]) -> Vec<u8> {
        let mut v = std::fs::read(fixture!("acts.mat")).unwrap()[..128].to_vec();
        for e in elements {
            v.extend(e);
        }
        v
    }

    #[test]
    fn lying_sizes_do_not_allocate() {
        // A compressed variable claiming 100000 x 100000 singles (40 GB) whose stream
        // holds a few bytes: must fail fast, not try to allocate.
        let mut real = MI_SINGLE.to_le_bytes().to_vec();
        real.extend(40_000_000_000u64.to_le_bytes()[..4].iter()); // wrong on purpose
        real.extend([0u8; 16]);
        let inner = matrix(7, &[100_000, 100_000], "huge", real);
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(&inner).unwrap();
        let comp = z.finish().unwrap();
        let mut el = MI_COMPRESSED.to_le_bytes().to_vec();
        el.extend((comp.len() as u32).to_le_bytes());
        el.extend(comp);
        let f = Scratch::new("huge-z", &file(&[el.clone()]));
        assert!(matches!(
            read_variable(&f.0, "huge"),
            Err(MatError::Malformed { .. })
        ));

        // The same with a size field that agrees with the dimensions (40000 x 25000
        // singles = 4e9 bytes, which fits a u32) but no data behind it.
        let mut real = MI_SINGLE.to_le_bytes().to_vec();
        real.extend(4_000_000_000u32.to_le_bytes());
        real.extend([0u8; 64]);
        let inner = matrix(7, &[40_000, 25_000], "huge", real);
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(&inner).unwrap();
        let comp = z.finish().unwrap();
        let mut el = MI_COMPRESSED.to_le_bytes().to_vec();
        el.extend((comp.len() as u32).to_le_bytes());
        el.extend(comp);
        let f = Scratch::new("huge-z2", &file(&[el]));
        assert_eq!(list_variables(&f.0).unwrap()[0].dims, [40_000, 25_000]);
        assert!(matches!(
            read_variable(&f.0, "huge"),
            Err(MatError::BadZlib { .. })
        ));

        // Uncompressed: the element itself claims more than the file holds.
        let inner = matrix(7, &[40_000, 25_000], "huge", sub(MI_SINGLE, &[0; 16]));
        let mut raw = file(&[inner]);
        raw[132..136].copy_from_slice(&4_000_000_100u32.to_le_bytes());
        let f = Scratch::new("huge-u", &raw);
        assert!(matches!(
            read_variable(&f.0, "huge"),
            Err(MatError::Truncated { .. })
        ));
    }

    #[test]
    fn every_message_starts_with_the_path() {
        let acts = fixture!("acts_z.mat");
        let errors = [
            read_variable(acts, "nope").unwrap_err(),
            read_variable(acts, "note").unwrap_err(),
            read_variable(acts, "z").unwrap_err(),
            read_labels(acts, "labels_2d").unwrap_err(),
            read_labels(acts, "labels_frac").unwrap_err(),
            list_variables(fixture!("truncated.mat")).unwrap_err(),
            list_variables(fixture!("fake_v73.mat")).unwrap_err(),
            list_variables(fixture!("v4.mat")).unwrap_err(),
        ];
        for err in errors {
            let msg = err.to_string();
            assert!(
                msg.starts_with(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/mat/")),
                "{msg}"
            );
        }
    }

    #[test]
    fn damaged_files_never_panic() {
        let files = [
            fixture!("handmade.mat"),
            fixture!("handmade_be.mat"),
            fixture!("acts.mat"),
            fixture!("acts_z.mat"),
        ];
        for path in files {
            let raw = std::fs::read(path).unwrap();
            let tag = path.file_stem().unwrap().to_string_lossy().into_owned();
            let mut variants: Vec<Vec<u8>> = (0..raw.len())
                .step_by(3)
                .map(|n| raw[..n].to_vec())
                .collect();
            for i in 120..raw.len() {
                let mut v = raw.clone();
                v[i] ^= 0xA5;
                variants.push(v);
            }
            for (k, bytes) in variants.iter().enumerate() {
                let f = Scratch::new(&format!("damaged-{tag}-{k}"), bytes);
                let _ = list_variables(&f.0);
                let _ = read_variable(&f.0, "zc");
                let _ = read_variable(&f.0, "conv1");
                let _ = read_labels(&f.0, "labels");
            }
        }
    }

    #[test]
    fn transposition_matches_a_naive_copy() {
        let shapes = [
            vec![1, 1],
            vec![5, 1],
            vec![1, 6],
            vec![7],
            vec![3, 7],
            vec![40, 33],
            vec![33, 40],
            vec![2, 3, 4],
            vec![4, 1, 3, 2],
            vec![2, 3, 4, 5],
            vec![37, 3, 5, 2],
            vec![2, 1, 3, 1, 4, 1],
            vec![0, 3],
        ];
        for dims in shapes {
            let n: usize = dims.iter().product();
            let col: Vec<usize> = (0..n).collect();
            // Naive: row-major index of each multi-index, reading the column-major one.
            let mut want = vec![0; n];
            for (r, slot) in want.iter_mut().enumerate() {
                let mut rest = r;
                let mut idx = vec![0; dims.len()];
                for k in (0..dims.len()).rev() {
                    idx[k] = rest % dims[k];
                    rest /= dims[k];
                }
                let mut p = 0;
                for k in (0..dims.len()).rev() {
                    p = p * dims[k] + idx[k];
                }
                *slot = col[p];
            }
            assert_eq!(reorder_by_copy(col.clone(), &dims), want, "copy {dims:?}");
            let mut got = col.clone();
            reorder_in_place(&mut got, &dims);
            assert_eq!(got, want, "in place {dims:?}");
        }
    }
}
