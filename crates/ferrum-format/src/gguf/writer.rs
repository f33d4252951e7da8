//! Streaming GGUF v3 writer, laid out the way llama.cpp writes and expects:
//! header, tensor infos, zero padding to the alignment, then each tensor's data
//! at consecutive aligned offsets, each followed by zero padding to the
//! alignment. `general.alignment` is written only when the caller adds it
//! (or sets an alignment other than the default 32).
//!
//! Memory is bounded by the metadata plus the one tensor the caller is
//! writing: infos are computed up front, data is streamed in declaration order.
//!
//! Beyond what the reader accepts, the writer refuses what llama.cpp cannot
//! load: tensor names of 64 bytes or more, and zero dimensions. It does write
//! arrays of arrays (the format allows them and the reader reads them), but
//! llama.cpp's reader rejects those, so keep them out of files meant for it.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use ferrum_core::GgmlType;

use super::reader::{ALIGNMENT_KEY, DEFAULT_ALIGNMENT, MAX_ARRAY_DEPTH, MAX_METADATA_VALUES};
use super::tensor::{align_up, checked_n_bytes};
use super::value::ValueType;
use super::{GgufError, GgufTensorInfo, GgufValue};

/// The version this writer produces.
pub const WRITE_VERSION: u32 = 3;

/// llama.cpp's `GGML_MAX_NAME`: names must be shorter, leaving room for its NUL.
pub const MAX_TENSOR_NAME: usize = 63;

/// Collects metadata and tensor declarations; [`GgufWriter::begin`] writes
/// the header and returns the sink that takes tensor data.
#[derive(Debug)]
pub struct GgufWriter {
    metadata: Vec<(String, GgufValue)>,
    keys: HashSet<String>,
    /// Declared tensors; offsets are assigned in `begin`.
    tensors: Vec<GgufTensorInfo>,
    names: HashSet<String>,
    alignment: u64,
    value_count: u64,
}

impl Default for GgufWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl GgufWriter {
    pub fn new() -> Self {
        GgufWriter {
            metadata: Vec::new(),
            keys: HashSet::new(),
            tensors: Vec::new(),
            names: HashSet::new(),
            alignment: DEFAULT_ALIGNMENT,
            value_count: 0,
        }
    }

    /// Add a key-value pair (written in the order added). Arrays must hold one
    /// value type and nest at most [`MAX_ARRAY_DEPTH`] deep. Adding
    /// `general.alignment` (a u32 power of two) sets the alignment.
    pub fn add_kv(&mut self, key: impl Into<String>, value: GgufValue) -> Result<(), GgufError> {
        let key = key.into();
        if self.keys.contains(&key) {
            return Err(GgufError::KeyAlreadyAdded { key });
        }
        if key == ALIGNMENT_KEY {
            self.alignment = alignment_value(&value)?;
        }
        let count = check_value(&key, &value, 0)?;
        let total = self.value_count.saturating_add(count);
        if total > MAX_METADATA_VALUES {
            return Err(GgufError::InvalidValue {
                key,
                reason: format!("metadata would hold {total} values, more than the {MAX_METADATA_VALUES} readers accept"),
            });
        }
        self.value_count = total;
        self.keys.insert(key.clone());
        self.metadata.push((key, value));
        Ok(())
    }

    /// Set the data alignment, writing `general.alignment` unless it is the
    /// default and was never added.
    pub fn set_alignment(&mut self, alignment: u32) -> Result<(), GgufError> {
        let value = GgufValue::U32(alignment);
        self.alignment = alignment_value(&value)?;
        if let Some((_, v)) = self.metadata.iter_mut().find(|(k, _)| k == ALIGNMENT_KEY) {
            *v = value;
        } else if self.alignment != DEFAULT_ALIGNMENT {
            self.add_kv(ALIGNMENT_KEY, value)?;
        }
        Ok(())
    }

    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Declare a tensor; its data goes to [`GgufTensorSink::write_tensor`] in
    /// declaration order. `dims` is ne0 (contiguous) first.
    pub fn add_tensor(
        &mut self,
        name: impl Into<String>,
        dims: &[u64],
        ty: GgmlType,
    ) -> Result<(), GgufError> {
        let name = name.into();
        if self.names.contains(&name) {
            return Err(GgufError::TensorAlreadyAdded { tensor: name });
        }
        if name.len() > MAX_TENSOR_NAME {
            return Err(GgufError::TensorNameTooLong {
                len: name.len(),
                tensor: name,
                max: MAX_TENSOR_NAME,
            });
        }
        checked_n_bytes(&name, dims, ty)?;
        if dims.contains(&0) {
            return Err(GgufError::ZeroDim {
                tensor: name,
                dims: dims.to_vec(),
            });
        }
        self.names.insert(name.clone());
        self.tensors.push(GgufTensorInfo {
            name,
            dims: dims.to_vec(),
            ty,
            offset: 0,
        });
        Ok(())
    }

    /// Assign aligned offsets, write the header, tensor infos and padding to
    /// `out`, and return the sink for tensor data.
    pub fn begin<W: Write>(mut self, out: W) -> Result<GgufTensorSink<W>, GgufError> {
        let mut next: u64 = 0;
        for t in &mut self.tensors {
            t.offset = next;
            let end = next.checked_add(t.n_bytes());
            next = end
                .and_then(|e| align_up(e, self.alignment))
                .ok_or_else(|| GgufError::ElementCountOverflow {
                    tensor: t.name.clone(),
                    dims: t.dims.clone(),
                })?;
        }
        let mut sink = GgufTensorSink {
            out,
            pos: 0,
            alignment: self.alignment,
            data_offset: 0,
            tensors: Vec::new(),
            next: 0,
        };
        sink.put(b"GGUF")?;
        sink.put(&WRITE_VERSION.to_le_bytes())?;
        sink.put(&(self.tensors.len() as u64).to_le_bytes())?;
        sink.put(&(self.metadata.len() as u64).to_le_bytes())?;
        for (key, value) in &self.metadata {
            sink.put_str(key)?;
            sink.put(&value.value_type().id().to_le_bytes())?;
            sink.put_value(value)?;
        }
        for t in &self.tensors {
            sink.put_str(&t.name)?;
            sink.put(&(t.dims.len() as u32).to_le_bytes())?;
            for d in &t.dims {
                sink.put(&d.to_le_bytes())?;
            }
            sink.put(&t.ty.id().to_le_bytes())?;
            sink.put(&t.offset.to_le_bytes())?;
        }
        sink.pad()?;
        sink.data_offset = sink.pos;
        sink.tensors = self.tensors;
        Ok(sink)
    }
}

/// Receives tensor data, in declaration order, after the header is written.
#[derive(Debug)]
pub struct GgufTensorSink<W: Write> {
    out: W,
    /// Bytes written so far (absolute file offset).
    pos: u64,
    alignment: u64,
    data_offset: u64,
    tensors: Vec<GgufTensorInfo>,
    /// Index of the next tensor to write.
    next: usize,
}

impl<W: Write> GgufTensorSink<W> {
    /// Tensor infos with their assigned offsets, in declaration order.
    pub fn tensors(&self) -> &[GgufTensorInfo] {
        &self.tensors
    }

    /// The tensor whose data `write_tensor` expects next.
    pub fn next_tensor(&self) -> Option<&GgufTensorInfo> {
        self.tensors.get(self.next)
    }

    /// Absolute file offset of the data section.
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    /// Write the data of the next declared tensor, which must be `name`, then
    /// zero padding to the alignment.
    pub fn write_tensor(&mut self, name: &str, bytes: &[u8]) -> Result<(), GgufError> {
        let Some(t) = self.tensors.get(self.next) else {
            return Err(GgufError::TensorOrder {
                expected: format!("nothing (all {} tensors written)", self.tensors.len()),
                got: name.to_owned(),
            });
        };
        if t.name != name {
            return Err(GgufError::TensorOrder {
                expected: t.name.clone(),
                got: name.to_owned(),
            });
        }
        let expected = t.n_bytes();
        if bytes.len() as u64 != expected {
            return Err(GgufError::TensorSizeMismatch {
                tensor: t.name.clone(),
                expected,
                got: bytes.len() as u64,
            });
        }
        self.put(bytes)?;
        self.pad()?;
        self.next += 1;
        Ok(())
    }

    /// Check every declared tensor was written, flush, and return the writer.
    pub fn finish(mut self) -> Result<W, GgufError> {
        if let Some(t) = self.tensors.get(self.next) {
            return Err(GgufError::MissingTensorData {
                written: self.next,
                declared: self.tensors.len(),
                next: t.name.clone(),
            });
        }
        self.out.flush().map_err(GgufError::Write)?;
        Ok(self.out)
    }

    fn put(&mut self, bytes: &[u8]) -> Result<(), GgufError> {
        self.out.write_all(bytes).map_err(GgufError::Write)?;
        self.pos += bytes.len() as u64;
        Ok(())
    }

    fn put_str(&mut self, s: &str) -> Result<(), GgufError> {
        self.put(&(s.len() as u64).to_le_bytes())?;
        self.put(s.as_bytes())
    }

    /// Zeros up to the next multiple of the alignment.
    fn pad(&mut self) -> Result<(), GgufError> {
        const ZEROS: [u8; 4096] = [0; 4096];
        let target = align_up(self.pos, self.alignment).unwrap_or(self.pos);
        let mut left = target - self.pos;
        while left > 0 {
            let n = left.min(ZEROS.len() as u64);
            self.put(&ZEROS[..n as usize])?;
            left -= n;
        }
        Ok(())
    }

    /// The value's payload (its type id is written by the caller).
    fn put_value(&mut self, v: &GgufValue) -> Result<(), GgufError> {
        match v {
            GgufValue::U8(x) => self.put(&x.to_le_bytes()),
            GgufValue::I8(x) => self.put(&x.to_le_bytes()),
            GgufValue::U16(x) => self.put(&x.to_le_bytes()),
            GgufValue::I16(x) => self.put(&x.to_le_bytes()),
            GgufValue::U32(x) => self.put(&x.to_le_bytes()),
            GgufValue::I32(x) => self.put(&x.to_le_bytes()),
            GgufValue::U64(x) => self.put(&x.to_le_bytes()),
            GgufValue::I64(x) => self.put(&x.to_le_bytes()),
            GgufValue::F32(x) => self.put(&x.to_le_bytes()),
            GgufValue::F64(x) => self.put(&x.to_le_bytes()),
            GgufValue::Bool(x) => self.put(&[u8::from(*x)]),
            GgufValue::String(s) => self.put_str(s),
            GgufValue::Array(items) => {
                // An empty array keeps no element type; write it as u8.
                let elem = items.first().map_or(ValueType::U8, GgufValue::value_type);
                self.put(&elem.id().to_le_bytes())?;
                self.put(&(items.len() as u64).to_le_bytes())?;
                items.iter().try_for_each(|item| self.put_value(item))
            }
        }
    }
}

fn alignment_value(value: &GgufValue) -> Result<u64, GgufError> {
    let GgufValue::U32(a) = *value else {
        // llama.cpp reads general.alignment strictly as u32.
        return Err(GgufError::WrongType {
            key: ALIGNMENT_KEY.to_owned(),
            expected: "u32",
            found: value.type_name(),
        });
    };
    if a == 0 || !a.is_power_of_two() {
        return Err(GgufError::BadAlignment { value: a.into() });
    }
    Ok(a.into())
}

/// Check arrays are homogeneous and not nested too deep; return how many
/// values (array elements included) `v` holds. `level` = enclosing arrays.
fn check_value(key: &str, v: &GgufValue, level: usize) -> Result<u64, GgufError> {
    let GgufValue::Array(items) = v else {
        return Ok(1);
    };
    if level + 1 > MAX_ARRAY_DEPTH {
        return Err(GgufError::InvalidValue {
            key: key.to_owned(),
            reason: format!(
                "arrays nested {} deep (at most {MAX_ARRAY_DEPTH} allowed)",
                level + 1
            ),
        });
    }
    let mut count: u64 = 1;
    if let Some(first) = items.first() {
        let expected = first.value_type();
        for (index, item) in items.iter().enumerate() {
            if item.value_type() != expected {
                return Err(GgufError::InvalidValue {
                    key: key.to_owned(),
                    reason: format!(
                        "array element {index} is {}, but element 0 is {}; a GGUF array holds one type",
                        item.type_name(),
                        expected.name()
                    ),
                });
            }
            count = count.saturating_add(check_value(key, item, level + 1)?);
        }
    }
    Ok(count)
}

/// One tensor for [`write_file`].
#[derive(Clone, Copy, Debug)]
pub struct GgufTensorData<'a> {
    pub name: &'a str,
    /// ne0 (contiguous) first.
    pub dims: &'a [u64],
    pub ty: GgmlType,
    pub data: &'a [u8],
}

/// Write a whole GGUF v3 file from in-memory parts.
pub fn write_file(
    path: &Path,
    metadata: &[(String, GgufValue)],
    tensors: &[GgufTensorData<'_>],
) -> Result<(), GgufError> {
    let mut w = GgufWriter::new();
    for (k, v) in metadata {
        w.add_kv(k.clone(), v.clone())?;
    }
    for t in tensors {
        w.add_tensor(t.name, t.dims, t.ty)?;
    }
    let io = |source| GgufError::Io {
        path: path.to_owned(),
        source,
    };
    let file = File::create(path).map_err(io)?;
    let with_path = |e| match e {
        GgufError::Write(source) => io(source),
        other => other,
    };
    let mut sink = w.begin(BufWriter::new(file)).map_err(with_path)?;
    for t in tensors {
        sink.write_tensor(t.name, t.data).map_err(with_path)?;
    }
    sink.finish().map_err(with_path)?;
    Ok(())
}
