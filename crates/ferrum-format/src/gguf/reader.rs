//! Parse and validate a GGUF v2/v3 header from untrusted bytes.
//!
//! Layout (all little-endian):
//! ```text
//! "GGUF" u32 version  u64 tensor_count  u64 kv_count
//! kv_count × (string key, u32 value type, value)
//! tensor_count × (string name, u32 n_dims, n_dims × u64 dim, u32 ggml type, u64 offset)
//! zero padding to `general.alignment` (default 32)
//! data section: tensor data at the listed offsets
//! ```
//! Every count is bounded by the bytes left before anything is allocated, and
//! every tensor's byte range is checked against the file, so callers can
//! slice tensor data without further checks.

use std::collections::HashMap;

use ferrum_core::GgmlType;

use super::cursor::Cursor;
use super::tensor::{align_up, checked_n_bytes};
use super::value::ValueType;
use super::{GgufError, GgufTensorInfo, GgufValue};

/// Alignment of the data section and of each tensor when the file has no
/// `general.alignment` key.
pub const DEFAULT_ALIGNMENT: u64 = 32;

/// The key that overrides [`DEFAULT_ALIGNMENT`].
pub const ALIGNMENT_KEY: &str = "general.alignment";

/// Deepest allowed nesting of arrays (an array of arrays is depth 2).
pub const MAX_ARRAY_DEPTH: usize = 8;

/// Cap on the number of metadata values in one file (array elements count
/// one each). Real vocabularies need about a million; the cap stops a forged
/// array count in a large file from turning each input byte into a 32-byte
/// `GgufValue`.
pub const MAX_METADATA_VALUES: u64 = 1 << 23;

/// Fewest bytes a key-value pair can take: u64 key length, u32 type, 1-byte value.
const MIN_KV_BYTES: u64 = 13;
/// Fewest bytes a tensor info can take: u64 name length, u32 n_dims, one u64
/// dim, u32 type, u64 offset.
const MIN_TENSOR_INFO_BYTES: u64 = 32;
/// Most elements reserved up front for any list read from the file; lists
/// grow past this only as their elements are actually read.
const MAX_PREALLOC: u64 = 4096;

/// A validated header.
pub(crate) struct Parsed {
    pub version: u32,
    pub alignment: u64,
    pub data_offset: u64,
    pub metadata: Vec<(String, GgufValue)>,
    pub key_index: HashMap<String, usize>,
    pub tensors: Vec<GgufTensorInfo>,
    pub tensor_index: HashMap<String, usize>,
}

fn prealloc(count: u64) -> usize {
    usize::try_from(count.min(MAX_PREALLOC)).unwrap_or(0)
}

pub(crate) fn parse(buf: &[u8]) -> Result<Parsed, GgufError> {
    let mut c = Cursor::new(buf);
    let magic = c.take(4, || "magic".into())?;
    if magic != b"GGUF" {
        let mut found = [0u8; 4];
        for (f, b) in found.iter_mut().zip(magic) {
            *f = *b;
        }
        return Err(GgufError::BadMagic { found });
    }
    let version = c.u32(|| "version".into())?;
    if !(2..=3).contains(&version) {
        return Err(GgufError::UnsupportedVersion { version });
    }
    let tensor_count = c.u64(|| "tensor count".into())?;
    let kv_count = c.u64(|| "key-value count".into())?;

    // Bound both counts by the bytes left; after this, `count × min size <=
    // remaining`, so neither count can drive a large allocation or a long loop.
    let remaining = c.remaining();
    let max_kv = remaining / MIN_KV_BYTES;
    if kv_count > max_kv {
        return Err(GgufError::KvCountTooLarge {
            count: kv_count,
            remaining,
            max: max_kv,
        });
    }
    let left_for_tensors = remaining - kv_count * MIN_KV_BYTES;
    let max_tensors = left_for_tensors / MIN_TENSOR_INFO_BYTES;
    if tensor_count > max_tensors {
        return Err(GgufError::TensorCountTooLarge {
            count: tensor_count,
            remaining,
            max: max_tensors,
        });
    }

    let (metadata, key_index) = read_metadata(&mut c, kv_count)?;
    let alignment = alignment_of(&metadata, &key_index)?;
    let (mut tensors, tensor_index) = read_tensor_infos(&mut c, tensor_count)?;

    let header_end = c.pos();
    let data_offset =
        align_up(header_end, alignment).ok_or(GgufError::BadAlignment { value: alignment })?;
    let file_len = buf.len() as u64;
    for t in &tensors {
        check_placement(t, alignment, data_offset, file_len)?;
    }
    tensors.shrink_to_fit();
    Ok(Parsed {
        version,
        alignment,
        data_offset,
        metadata,
        key_index,
        tensors,
        tensor_index,
    })
}

type Metadata = (Vec<(String, GgufValue)>, HashMap<String, usize>);

fn read_metadata(c: &mut Cursor<'_>, kv_count: u64) -> Result<Metadata, GgufError> {
    let mut metadata: Vec<(String, GgufValue)> = Vec::with_capacity(prealloc(kv_count));
    let mut index = HashMap::with_capacity(prealloc(kv_count));
    let mut budget = MAX_METADATA_VALUES;
    for i in 0..kv_count {
        let key_at = c.pos();
        let key = c.string(|| format!("key of metadata pair {i}"))?;
        if index.contains_key(&key) {
            return Err(GgufError::DuplicateKey {
                offset: key_at,
                key,
            });
        }
        let ty_at = c.pos();
        let id = c.u32(|| format!("value type of key '{key}'"))?;
        let ty = ValueType::from_id(id).ok_or_else(|| GgufError::UnknownValueType {
            offset: ty_at,
            key: key.clone(),
            id,
        })?;
        let value = read_value(c, ty, &key, 0, &mut budget)?;
        index.insert(key.clone(), metadata.len());
        metadata.push((key, value));
    }
    Ok((metadata, index))
}

/// Read one value of type `ty`; `level` is the number of enclosing arrays.
fn read_value(
    c: &mut Cursor<'_>,
    ty: ValueType,
    key: &str,
    level: usize,
    budget: &mut u64,
) -> Result<GgufValue, GgufError> {
    if *budget == 0 {
        return Err(GgufError::MetadataTooLarge {
            offset: c.pos(),
            key: key.to_owned(),
            limit: MAX_METADATA_VALUES,
        });
    }
    *budget -= 1;
    let what = || format!("{} value of key '{key}'", ty.name());
    Ok(match ty {
        ValueType::U8 => GgufValue::U8(c.u8(what)?),
        ValueType::I8 => GgufValue::I8(c.i8(what)?),
        ValueType::U16 => GgufValue::U16(c.u16(what)?),
        ValueType::I16 => GgufValue::I16(c.i16(what)?),
        ValueType::U32 => GgufValue::U32(c.u32(what)?),
        ValueType::I32 => GgufValue::I32(c.i32(what)?),
        ValueType::U64 => GgufValue::U64(c.u64(what)?),
        ValueType::I64 => GgufValue::I64(c.i64(what)?),
        ValueType::F32 => GgufValue::F32(c.f32(what)?),
        ValueType::F64 => GgufValue::F64(c.f64(what)?),
        ValueType::Bool => {
            let at = c.pos();
            match c.u8(what)? {
                0 => GgufValue::Bool(false),
                1 => GgufValue::Bool(true),
                byte => {
                    return Err(GgufError::InvalidBool {
                        offset: at,
                        key: key.to_owned(),
                        byte,
                    })
                }
            }
        }
        ValueType::String => GgufValue::String(c.string(what)?),
        ValueType::Array => read_array(c, key, level, budget)?,
    })
}

fn read_array(
    c: &mut Cursor<'_>,
    key: &str,
    level: usize,
    budget: &mut u64,
) -> Result<GgufValue, GgufError> {
    let ty_at = c.pos();
    let id = c.u32(|| format!("array element type of key '{key}'"))?;
    let elem = ValueType::from_id(id).ok_or_else(|| GgufError::UnknownValueType {
        offset: ty_at,
        key: key.to_owned(),
        id,
    })?;
    // This array sits at depth level + 1; arrays inside it at level + 2.
    if elem == ValueType::Array && level + 2 > MAX_ARRAY_DEPTH {
        return Err(GgufError::ArrayTooDeep {
            offset: ty_at,
            key: key.to_owned(),
            depth: level + 2,
            max: MAX_ARRAY_DEPTH,
        });
    }
    let len_at = c.pos();
    let len = c.u64(|| format!("array length of key '{key}'"))?;
    let remaining = c.remaining();
    let max = remaining / elem.min_encoded_size();
    if len > max {
        return Err(GgufError::ArrayTooLong {
            offset: len_at,
            key: key.to_owned(),
            elem_type: elem.name(),
            len,
            remaining,
            max,
        });
    }
    let mut items = Vec::with_capacity(prealloc(len));
    for _ in 0..len {
        items.push(read_value(c, elem, key, level + 1, budget)?);
    }
    Ok(GgufValue::Array(items))
}

fn alignment_of(
    metadata: &[(String, GgufValue)],
    index: &HashMap<String, usize>,
) -> Result<u64, GgufError> {
    let Some(value) = index
        .get(ALIGNMENT_KEY)
        .and_then(|&i| metadata.get(i))
        .map(|(_, v)| v)
    else {
        return Ok(DEFAULT_ALIGNMENT);
    };
    let a = value.as_u64().ok_or(GgufError::WrongType {
        key: ALIGNMENT_KEY.to_owned(),
        expected: "u32",
        found: value.type_name(),
    })?;
    if a == 0 || !a.is_power_of_two() {
        return Err(GgufError::BadAlignment { value: a });
    }
    Ok(a)
}

type TensorInfos = (Vec<GgufTensorInfo>, HashMap<String, usize>);

fn read_tensor_infos(c: &mut Cursor<'_>, count: u64) -> Result<TensorInfos, GgufError> {
    let mut tensors: Vec<GgufTensorInfo> = Vec::with_capacity(prealloc(count));
    let mut index = HashMap::with_capacity(prealloc(count));
    for i in 0..count {
        let name_at = c.pos();
        let name = c.string(|| format!("name of tensor {i}"))?;
        if index.contains_key(&name) {
            return Err(GgufError::DuplicateTensor {
                offset: name_at,
                tensor: name,
            });
        }
        let n_dims = c.u32(|| format!("n_dims of tensor '{name}'"))?;
        if n_dims == 0 || n_dims as usize > super::tensor::MAX_DIMS {
            return Err(GgufError::BadDimCount {
                tensor: name,
                n_dims,
            });
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for d in 0..n_dims {
            dims.push(c.u64(|| format!("dim {d} of tensor '{name}'"))?);
        }
        let ty_at = c.pos();
        let id = c.u32(|| format!("type of tensor '{name}'"))?;
        let ty = GgmlType::from_id(id).map_err(|_| GgufError::UnknownTensorType {
            offset: ty_at,
            tensor: name.clone(),
            id,
        })?;
        let offset = c.u64(|| format!("data offset of tensor '{name}'"))?;
        checked_n_bytes(&name, &dims, ty)?;
        index.insert(name.clone(), tensors.len());
        tensors.push(GgufTensorInfo {
            name,
            dims,
            ty,
            offset,
        });
    }
    Ok((tensors, index))
}

/// Offset aligned and the whole byte range inside the file.
fn check_placement(
    t: &GgufTensorInfo,
    alignment: u64,
    data_offset: u64,
    file_len: u64,
) -> Result<(), GgufError> {
    if !t.offset.is_multiple_of(alignment) {
        return Err(GgufError::MisalignedOffset {
            tensor: t.name.clone(),
            offset: t.offset,
            alignment,
        });
    }
    let size = t.n_bytes();
    let start = data_offset.checked_add(t.offset);
    let end = start.and_then(|s| s.checked_add(size));
    match end {
        Some(end) if end <= file_len => Ok(()),
        _ => Err(GgufError::TensorOutOfBounds {
            tensor: t.name.clone(),
            offset: t.offset,
            size,
            start: start.unwrap_or(u64::MAX),
            end: end.unwrap_or(u64::MAX),
            file_len,
        }),
    }
}
