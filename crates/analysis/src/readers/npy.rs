//! numpy's `.npy` files (format versions 1.0, 2.0 and 3.0), as `np.save` writes them: C-order
//! arrays of little-endian `float32`, `float64`, `int32` or `int64`. Anything else (Fortran
//! order, big-endian, other or structured dtypes, pickled objects) is refused with a one-line
//! error saying what the file holds. The header is parsed as the Python literal it is (a dict
//! of `descr`, `fortran_order` and `shape`), and the shape's byte count is checked against the
//! file's length before any data is allocated.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use cnnu_run::IoError;

/// The magic string that starts every `.npy` file.
const MAGIC: &[u8; 6] = b"\x93NUMPY";

/// The values of an array, in the file's dtype.
#[derive(Debug, Clone, PartialEq)]
pub enum NpyData {
    /// `<f4`.
    F32(Vec<f32>),
    /// `<f8`.
    F64(Vec<f64>),
    /// `<i4`.
    I32(Vec<i32>),
    /// `<i8`.
    I64(Vec<i64>),
}

impl NpyData {
    /// numpy's name of the dtype (`float32`, `float64`, `int32`, `int64`).
    pub fn dtype_name(&self) -> &'static str {
        match self {
            NpyData::F32(_) => "float32",
            NpyData::F64(_) => "float64",
            NpyData::I32(_) => "int32",
            NpyData::I64(_) => "int64",
        }
    }
}

/// An array read from a `.npy` file: its shape and its values in C order.
#[derive(Debug, Clone, PartialEq)]
pub struct NpyArray {
    /// The shape (empty for a 0-d array).
    pub shape: Vec<usize>,
    /// The values, `shape.iter().product()` of them.
    pub data: NpyData,
}

/// Why a `.npy` file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum NpyError {
    /// The file cannot be opened or read.
    #[error(transparent)]
    Io(#[from] IoError),
    /// Not a `.npy` file, or a header this reader cannot parse.
    #[error("{}: not a .npy file: {problem}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// A dtype other than little-endian float32, float64, int32 or int64.
    #[error(
        "{}: dtype {descr} is not supported: expected little-endian float32 ('<f4'), float64 ('<f8'), int32 ('<i4') or int64 ('<i8')",
        path.display()
    )]
    Dtype {
        /// The file.
        path: PathBuf,
        /// The header's `descr`, as written.
        descr: String,
    },
    /// A Fortran-order (column-major) array.
    #[error(
        "{}: the array is stored in Fortran order; save it in C order (np.save(path, np.ascontiguousarray(a)))",
        path.display()
    )]
    FortranOrder {
        /// The file.
        path: PathBuf,
    },
    /// The data are not as long as the shape says.
    #[error(
        "{}: shape {shape:?} of {descr} needs {need} data bytes, the file holds {have}",
        path.display()
    )]
    Size {
        /// The file.
        path: PathBuf,
        /// The header's shape.
        shape: Vec<usize>,
        /// The header's `descr`.
        descr: String,
        /// Bytes the shape needs (`None` in the message when it overflows).
        need: String,
        /// Bytes after the header.
        have: u64,
    },
}

/// Reads the whole array of a `.npy` file.
pub fn read(path: &Path) -> Result<NpyArray, NpyError> {
    let io = IoError::at(path);
    let mut file = File::open(path).map_err(io)?;
    let file_len = file.metadata().map_err(IoError::at(path))?.len();
    read_from(&mut file, file_len, path)
}

/// What an array's header says: its shape, and whether it holds floats (else integers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NpyShape {
    /// The array's shape.
    pub shape: Vec<usize>,
    /// float32 or float64 (else int32 or int64).
    pub float: bool,
}

/// The header of a `.npy` stream of `len` bytes, checked as [`read_from`] checks it, without
/// reading the data.
pub fn peek_from(
    reader: &mut (impl Read + ?Sized),
    len: u64,
    path: &Path,
) -> Result<NpyShape, NpyError> {
    let (h, _) = header_from(reader, len, path)?;
    Ok(NpyShape {
        float: h.descr.starts_with("<f"),
        shape: h.shape,
    })
}

/// [`read`] of `len` bytes from `reader` (a file, or an entry of an `.npz` archive), `path`
/// naming it in errors.
pub fn read_from(
    reader: &mut (impl Read + ?Sized),
    len: u64,
    path: &Path,
) -> Result<NpyArray, NpyError> {
    let (h, have) = header_from(reader, len, path)?;
    let item = if h.descr.ends_with('4') { 4u64 } else { 8 };
    let need = h
        .shape
        .iter()
        .try_fold(item, |a, &d| a.checked_mul(d as u64));
    if need != Some(have) {
        return Err(NpyError::Size {
            path: path.to_path_buf(),
            shape: h.shape,
            descr: h.descr,
            need: need.map_or_else(|| "more than 2^64".to_string(), |b| b.to_string()),
            have,
        });
    }
    // `have` bytes are in the file: this allocation is the file's own size.
    let mut bytes = vec![0u8; have as usize];
    read_exact(reader, &mut bytes, path, "the data")?;
    fn words<const W: usize, T>(b: &[u8], f: fn([u8; W]) -> T) -> Vec<T> {
        b.chunks_exact(W)
            .map(|c| {
                let mut a = [0u8; W];
                a.copy_from_slice(c);
                f(a)
            })
            .collect()
    }
    let data = match h.descr.as_str() {
        "<f4" => NpyData::F32(words(&bytes, f32::from_le_bytes)),
        "<f8" => NpyData::F64(words(&bytes, f64::from_le_bytes)),
        "<i4" => NpyData::I32(words(&bytes, i32::from_le_bytes)),
        _ => NpyData::I64(words(&bytes, i64::from_le_bytes)),
    };
    Ok(NpyArray {
        shape: h.shape,
        data,
    })
}

/// The header of a `.npy` stream of `len` bytes, checked (magic, version, a supported dtype, C
/// order), and the number of data bytes after it.
fn header_from(
    file: &mut (impl Read + ?Sized),
    len: u64,
    path: &Path,
) -> Result<(Header, u64), NpyError> {
    let file_len = len;
    let format = |problem: String| NpyError::Format {
        path: path.to_path_buf(),
        problem,
    };
    let mut preamble = [0u8; 8];
    read_exact(file, &mut preamble, path, "the 8-byte preamble")?;
    if &preamble[..6] != MAGIC {
        return Err(format("it does not start with \\x93NUMPY".into()));
    }
    let (major, minor) = (preamble[6], preamble[7]);
    // Version 1.0 has a 2-byte header length, 2.0 and 3.0 a 4-byte one.
    let header_len = match major {
        1 => {
            let mut b = [0u8; 2];
            read_exact(file, &mut b, path, "the header length")?;
            u64::from(u16::from_le_bytes(b))
        }
        2 | 3 => {
            let mut b = [0u8; 4];
            read_exact(file, &mut b, path, "the header length")?;
            u64::from(u32::from_le_bytes(b))
        }
        _ => {
            return Err(format(format!(
                "format version {major}.{minor}, this reader knows 1.0, 2.0 and 3.0"
            )));
        }
    };
    let prefix = if major == 1 { 10 } else { 12 };
    if prefix + header_len > file_len {
        return Err(format(format!(
            "the header is {header_len} bytes, the file only {file_len}"
        )));
    }
    // Bounded by the file's length, checked above.
    let mut header = vec![0u8; header_len as usize];
    read_exact(file, &mut header, path, "the header")?;
    let header = String::from_utf8(header).map_err(|_| format("the header is not text".into()))?;
    let h = Header::parse(&header).map_err(|p| format(format!("header {header:?}: {p}")))?;
    if !matches!(h.descr.as_str(), "<f4" | "<i4" | "<f8" | "<i8") {
        return Err(NpyError::Dtype {
            path: path.to_path_buf(),
            descr: h.descr,
        });
    }
    if h.fortran_order {
        return Err(NpyError::FortranOrder {
            path: path.to_path_buf(),
        });
    }
    Ok((h, file_len - prefix - header_len))
}

fn read_exact(
    file: &mut (impl Read + ?Sized),
    buf: &mut [u8],
    path: &Path,
    what: &str,
) -> Result<(), NpyError> {
    file.read_exact(buf).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => NpyError::Format {
            path: path.to_path_buf(),
            problem: format!("the file ends inside {what}"),
        },
        _ => NpyError::Io(IoError {
            path: path.to_path_buf(),
            source: e,
        }),
    })
}

/// The three fields of a `.npy` header.
#[derive(Debug, Clone, PartialEq)]
struct Header {
    descr: String,
    fortran_order: bool,
    shape: Vec<usize>,
}

/// A value of the header's dict literal.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Str(String),
    Bool(bool),
    Tuple(Vec<usize>),
    /// Anything else (a structured dtype's list, …), kept as written.
    Other(String),
}

impl Header {
    /// Parses numpy's header, e.g. `{'descr': '<f8', 'fortran_order': False, 'shape': (100, 10), }`
    /// (padding and the final newline included).
    fn parse(text: &str) -> Result<Header, String> {
        let mut p = Parser {
            s: text.trim().as_bytes(),
            i: 0,
        };
        p.expect(b'{')?;
        let (mut descr, mut fortran, mut shape) = (None, None, None);
        loop {
            p.skip_ws();
            if p.eat(b'}') {
                break;
            }
            let key = match p.value()? {
                Value::Str(k) => k,
                v => return Err(format!("a key is {v:?}, not a string")),
            };
            p.skip_ws();
            p.expect(b':')?;
            let value = p.value()?;
            match (key.as_str(), value) {
                ("descr", Value::Str(d)) => descr = Some(d),
                ("descr", Value::Other(d)) => descr = Some(d),
                ("fortran_order", Value::Bool(b)) => fortran = Some(b),
                ("shape", Value::Tuple(t)) => shape = Some(t),
                (k @ ("descr" | "fortran_order" | "shape"), v) => {
                    return Err(format!("`{k}` is {v:?}"));
                }
                _ => {}
            }
            p.skip_ws();
            if !p.eat(b',') {
                p.skip_ws();
                p.expect(b'}')?;
                break;
            }
        }
        Ok(Header {
            descr: descr.ok_or("no `descr`")?,
            fortran_order: fortran.ok_or("no `fortran_order`")?,
            shape: shape.ok_or("no `shape`")?,
        })
    }
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn skip_ws(&mut self) {
        while self.s.get(self.i).is_some_and(u8::is_ascii_whitespace) {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        let hit = self.s.get(self.i) == Some(&c);
        self.i += usize::from(hit);
        hit
    }

    fn expect(&mut self, c: u8) -> Result<(), String> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(format!("expected `{}` at byte {}", c as char, self.i))
        }
    }

    fn value(&mut self) -> Result<Value, String> {
        self.skip_ws();
        match self.s.get(self.i) {
            Some(&q @ (b'\'' | b'"')) => {
                self.i += 1;
                let start = self.i;
                while self.s.get(self.i).is_some_and(|&c| c != q) {
                    self.i += 1;
                }
                let text = String::from_utf8_lossy(&self.s[start..self.i]).into_owned();
                self.expect(q)?;
                Ok(Value::Str(text))
            }
            Some(b'(') => {
                self.i += 1;
                let mut dims = Vec::new();
                loop {
                    self.skip_ws();
                    if self.eat(b')') {
                        break;
                    }
                    let start = self.i;
                    while self.s.get(self.i).is_some_and(u8::is_ascii_digit) {
                        self.i += 1;
                    }
                    let digits = std::str::from_utf8(&self.s[start..self.i]).unwrap_or("");
                    let dim = digits
                        .parse::<usize>()
                        .map_err(|_| format!("a dimension at byte {start} is not a count"))?;
                    dims.push(dim);
                    self.skip_ws();
                    if !self.eat(b',') {
                        self.skip_ws();
                        self.expect(b')')?;
                        break;
                    }
                }
                Ok(Value::Tuple(dims))
            }
            Some(b'[') => {
                // A structured dtype: keep its text up to the matching bracket.
                let start = self.i;
                let mut depth = 0usize;
                while let Some(&c) = self.s.get(self.i) {
                    self.i += 1;
                    match c {
                        b'[' | b'(' => depth += 1,
                        b']' | b')' => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                Ok(Value::Other(
                    String::from_utf8_lossy(&self.s[start..self.i]).into_owned(),
                ))
            }
            _ => {
                let start = self.i;
                while self
                    .s
                    .get(self.i)
                    .is_some_and(|&c| c.is_ascii_alphanumeric() || c == b'_')
                {
                    self.i += 1;
                }
                match &self.s[start..self.i] {
                    b"True" => Ok(Value::Bool(true)),
                    b"False" => Ok(Value::Bool(false)),
                    b"" => Err(format!("unexpected text at byte {start}")),
                    other => Ok(Value::Other(String::from_utf8_lossy(other).into_owned())),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `.npy` file as numpy writes one: magic, version, header padded so the data start at a
    /// multiple of 64, then `data`.
    fn npy(major: u8, header: &str, data: &[u8]) -> Vec<u8> {
        let prefix = if major == 1 { 10 } else { 12 };
        let mut h = header.to_string();
        while !(prefix + h.len() + 1).is_multiple_of(64) {
            h.push(' ');
        }
        h.push('\n');
        let mut b = MAGIC.to_vec();
        b.extend([major, 0]);
        if major == 1 {
            b.extend((h.len() as u16).to_le_bytes());
        } else {
            b.extend((h.len() as u32).to_le_bytes());
        }
        b.extend(h.as_bytes());
        b.extend(data);
        b
    }

    const F32_HEADER: &str = "{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }";

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, bytes).expect("write");
        p
    }

    #[test]
    fn reads_the_fixture_as_numpy_wrote_it() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/data/kornblith/x.npy");
        let a = read(&path).expect("reads");
        assert_eq!(a.shape, vec![100, 10]);
        let NpyData::F64(v) = &a.data else {
            panic!("float64, got {}", a.data.dtype_name())
        };
        assert_eq!(v.len(), 1000);
        // np.random.seed(1337); np.random.randn() starts with these.
        assert!(
            (v[0] - (-0.703_187_309_862_410_5)).abs() < 1e-15,
            "{}",
            v[0]
        );
    }

    #[test]
    fn every_dtype_and_version() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f32s: Vec<u8> = [1.5f32, -2.0, 3.25]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let i64s: Vec<u8> = [7i64, -1].iter().flat_map(|v| v.to_le_bytes()).collect();
        let i32s: Vec<u8> = [4i32, 5, 6, 7]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let cases = [
            (1, F32_HEADER, &f32s, vec![3]),
            (
                2,
                "{'descr': '<i8', 'fortran_order': False, 'shape': (2, 1), }",
                &i64s,
                vec![2, 1],
            ),
            (
                3,
                "{\"shape\": (2,2), \"descr\": \"<i4\", \"fortran_order\": False}",
                &i32s,
                vec![2, 2],
            ),
        ];
        for (k, (major, header, data, shape)) in cases.into_iter().enumerate() {
            let p = write(dir.path(), &format!("{k}.npy"), &npy(major, header, data));
            let a = read(&p).expect("reads");
            assert_eq!(a.shape, shape, "{header}");
        }
        let p = write(dir.path(), "0.npy", &npy(1, F32_HEADER, &f32s));
        assert_eq!(
            read(&p).expect("reads").data,
            NpyData::F32(vec![1.5, -2.0, 3.25])
        );
        // A 0-d array holds one value.
        let one: Vec<u8> = 2.5f64.to_le_bytes().to_vec();
        let p = write(
            dir.path(),
            "s.npy",
            &npy(
                1,
                "{'descr': '<f8', 'fortran_order': False, 'shape': (), }",
                &one,
            ),
        );
        let a = read(&p).expect("reads");
        assert_eq!((a.shape.len(), a.data), (0, NpyData::F64(vec![2.5])));
    }

    #[test]
    fn refusals_say_why_in_one_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let eight = [0u8; 8];
        let cases: [(&str, Vec<u8>, &str); 8] = [
            (
                "be.npy",
                npy(
                    1,
                    "{'descr': '>f8', 'fortran_order': False, 'shape': (1,), }",
                    &eight,
                ),
                "dtype >f8 is not supported",
            ),
            (
                "c16.npy",
                npy(
                    1,
                    "{'descr': '<c16', 'fortran_order': False, 'shape': (1,), }",
                    &eight,
                ),
                "dtype <c16 is not supported",
            ),
            (
                "struct.npy",
                npy(
                    1,
                    "{'descr': [('a', '<f4'), ('b', '<f4')], 'fortran_order': False, 'shape': (1,), }",
                    &eight,
                ),
                "dtype [('a', '<f4'), ('b', '<f4')] is not supported",
            ),
            (
                "f.npy",
                npy(
                    1,
                    "{'descr': '<f4', 'fortran_order': True, 'shape': (1, 2), }",
                    &eight,
                ),
                "stored in Fortran order",
            ),
            (
                "short.npy",
                npy(
                    1,
                    "{'descr': '<f8', 'fortran_order': False, 'shape': (100, 10), }",
                    &eight,
                ),
                "shape [100, 10] of <f8 needs 8000 data bytes, the file holds 8",
            ),
            (
                "huge.npy",
                npy(
                    2,
                    "{'descr': '<f8', 'fortran_order': False, 'shape': (4294967296, 4294967296), }",
                    &eight,
                ),
                "needs more than 2^64 data bytes, the file holds 8",
            ),
            (
                "text.npy",
                b"x,y\n1,2\n".to_vec(),
                "not a .npy file: it does not start with",
            ),
            (
                "cut.npy",
                MAGIC.to_vec(),
                "not a .npy file: the file ends inside the 8-byte preamble",
            ),
        ];
        for (name, bytes, want) in cases {
            let p = write(dir.path(), name, &bytes);
            let e = read(&p).expect_err(name).to_string();
            assert!(e.contains(want), "{name}: {e}");
            assert!(!e.contains('\n'), "{name}: {e}");
        }
        let mut long_header = npy(1, F32_HEADER, &[0; 12]);
        long_header[8] = 0xff;
        long_header[9] = 0xff;
        let p = write(dir.path(), "hdr.npy", &long_header);
        let e = read(&p).expect_err("header past the end").to_string();
        assert!(e.contains("the header is 65535 bytes"), "{e}");
        let e = read(&dir.path().join("absent.npy"))
            .expect_err("absent")
            .to_string();
        assert!(e.contains("absent.npy: No such file"), "{e}");
    }

    #[test]
    fn header_literals() {
        let h = Header::parse("{'descr': '<f8', 'fortran_order': False, 'shape': (100, 10), }  \n")
            .expect("parses");
        assert_eq!(h.shape, vec![100, 10]);
        assert_eq!(h.descr, "<f8");
        assert!(!h.fortran_order);
        assert!(Header::parse("{'descr': '<f8', 'shape': (1,)}").is_err());
        assert!(Header::parse("{'descr': '<f8', 'fortran_order': False, 'shape': (-1,)}").is_err());
        assert!(Header::parse("{'descr': '<f8', 'fortran_order': 0, 'shape': (1,)}").is_err());
        assert!(Header::parse("['descr']").is_err());
    }
}
