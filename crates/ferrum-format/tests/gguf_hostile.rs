//! Hostile input: truncation at every offset, seeded random corruption, and
//! hand-forged headers that must each yield one specific error (never a
//! panic, never a huge allocation).

mod gguf_common;

use ferrum_format::gguf::{GgufError, GgufFile, GgufValue, GgufWriter, MAX_ARRAY_DEPTH};
use gguf_common::{default_model, realistic_file, Raw, Rng};

/// Open, and on success touch everything a caller could touch.
fn open_and_touch(bytes: Vec<u8>) -> Result<GgufFile, GgufError> {
    let f = GgufFile::from_bytes(bytes)?;
    for t in f.tensors() {
        let data = f.tensor_data(t);
        assert_eq!(data.len() as u64, t.n_bytes(), "{}", t.name);
        assert_eq!(t.offset % f.alignment(), 0);
        assert!(f.tensor(&t.name).is_some());
    }
    for (k, v) in f.metadata() {
        assert!(f.get(k).is_some());
        let _ = (
            v.as_u64(),
            v.as_i64(),
            v.as_f32(),
            v.as_str(),
            v.as_array(),
            v.type_name(),
        );
        let _ = (
            f.get_u32(k),
            f.get_u64(k),
            f.get_f32(k),
            f.get_str(k),
            f.get_bool(k),
            f.get_array(k),
        );
    }
    assert_eq!(f.data_offset() % f.alignment(), 0);
    Ok(f)
}

/// End of the last tensor's data: any shorter file is missing data.
fn data_end(f: &GgufFile) -> u64 {
    f.tensors()
        .iter()
        .map(|t| f.data_offset() + t.offset + t.n_bytes())
        .max()
        .unwrap_or(0)
}

#[test]
fn truncation_at_every_offset() {
    let (bytes, _) = realistic_file(1000, 11);
    let full = GgufFile::from_bytes(bytes.clone()).unwrap();
    let need = data_end(&full) as usize;
    assert!(need > full.data_offset() as usize && need <= bytes.len());
    for cut in 0..=bytes.len() {
        let r = open_and_touch(bytes[..cut].to_vec());
        if cut < need {
            let e = r.expect_err(&format!("truncated at {cut} of {} must fail", bytes.len()));
            assert!(!e.to_string().is_empty());
        } else {
            // Only the trailing zero padding after the last tensor is missing.
            assert!(r.is_ok(), "cut {cut}: {:?}", r.err());
        }
    }
}

const INTERESTING: [u64; 10] = [
    0,
    1,
    2,
    5,
    0xFF,
    0xFFFF_FFFF,
    1 << 32,
    1 << 40,
    1 << 60,
    u64::MAX,
];

/// Flip bytes or plant interesting integers at random places, mostly inside
/// the header. Nothing may panic; whatever opens must be self-consistent.
#[test]
fn random_corruption_never_panics() {
    let (bytes, _) = realistic_file(200, 5);
    let header_len = GgufFile::from_bytes(bytes.clone()).unwrap().data_offset();
    let mut rng = Rng(0x5EED_F00D);
    let mut opened = 0;
    for _ in 0..20_000 {
        let mut b = bytes.clone();
        for _ in 0..=rng.below(4) {
            let span = if rng.below(100) < 85 {
                header_len
            } else {
                b.len() as u64
            };
            let at = rng.below(span) as usize;
            match rng.below(3) {
                0 => b[at] ^= (rng.below(255) + 1) as u8,
                1 => b[at] = [0u8, 0x7F, 0x80, 0xFF][rng.below(4) as usize],
                _ => {
                    let v = INTERESTING[rng.below(INTERESTING.len() as u64) as usize].to_le_bytes();
                    let n = if rng.below(2) == 0 { 4 } else { 8 };
                    for (i, byte) in v.iter().take(n).enumerate() {
                        if let Some(slot) = b.get_mut(at + i) {
                            *slot = *byte;
                        }
                    }
                }
            }
        }
        if rng.below(10) == 0 {
            b.truncate(rng.below(b.len() as u64 + 1) as usize);
        }
        if open_and_touch(b).is_ok() {
            opened += 1;
        }
    }
    // Corruption inside tensor data or string bytes still opens, so some must.
    assert!(opened > 0);
}

/// A valid one-kv, one-tensor file, from parts that the tests below forge.
fn file_with_tensor(dims: &[u64], ty: u32, offset: u64, data_len: usize) -> Vec<u8> {
    let mut r = Raw::header(3, 1, 1);
    r.kv_u32("k", 1)
        .tensor("t", dims, ty, offset)
        .pad(32)
        .zeros(data_len);
    r.done()
}

fn err(bytes: Vec<u8>) -> GgufError {
    match open_and_touch(bytes) {
        Ok(f) => panic!("expected an error, opened {f:?}"),
        Err(e) => e,
    }
}

#[test]
fn forged_control_file_is_valid() {
    let f = open_and_touch(file_with_tensor(&[4], 0, 0, 16)).unwrap();
    assert_eq!(f.tensor_data(&f.tensors()[0]), &[0; 16]);
}

#[test]
fn forged_counts_and_lengths() {
    let e = err(Raw::header(3, 0, 1).u64(u64::MAX).zeros(64).done());
    assert!(
        matches!(
            e,
            GgufError::StringTooLong {
                offset: 24,
                len: u64::MAX,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("byte 24"), "{e}");

    let e = err(Raw::header(3, 0, 1 << 60).zeros(64).done());
    assert!(
        matches!(e, GgufError::KvCountTooLarge { count, .. } if count == 1 << 60),
        "{e}"
    );

    let e = err(Raw::header(3, 1 << 60, 0).zeros(64).done());
    assert!(matches!(e, GgufError::TensorCountTooLarge { .. }), "{e}");
    let e = err(Raw::header(3, 3, 0).zeros(64).done()); // 64 bytes cannot hold 3 infos
    assert!(
        matches!(e, GgufError::TensorCountTooLarge { max: 2, .. }),
        "{e}"
    );

    for elem in [0u32, 8, 9, 12] {
        let e = err(Raw::header(3, 0, 1)
            .str("arr")
            .u32(9)
            .u32(elem)
            .u64(1 << 40)
            .zeros(64)
            .done());
        assert!(
            matches!(&e, GgufError::ArrayTooLong { key, len, .. } if key == "arr" && *len == 1 << 40),
            "{e}"
        );
    }

    let e = err(Raw::header(3, 1, 0)
        .str("t")
        .u32(1)
        .u64(7)
        .u32(0)
        .zeros(7)
        .done());
    assert!(
        matches!(&e, GgufError::Truncated { needed: 8, available: 7, what, .. } if what.contains("'t'")),
        "{e}"
    );
    let e = err(Raw::header(3, 1, 0).u64(1 << 50).zeros(40).done());
    assert!(matches!(e, GgufError::StringTooLong { .. }), "{e}");
}

#[test]
fn forged_tensor_infos() {
    for n in [0u32, 5, u32::MAX] {
        let mut r = Raw::header(3, 1, 0);
        r.str("t").u32(n).zeros(64);
        let e = err(r.done());
        assert!(
            matches!(&e, GgufError::BadDimCount { tensor, n_dims } if tensor == "t" && *n_dims == n),
            "{e}"
        );
    }
    for id in [4u32, 5, 99, u32::MAX] {
        let e = err(file_with_tensor(&[4], id, 0, 16));
        assert!(
            matches!(e, GgufError::UnknownTensorType { id: got, .. } if got == id),
            "{e}"
        );
    }
    let e = err(file_with_tensor(&[4], 0, 16, 64));
    assert!(
        matches!(
            e,
            GgufError::MisalignedOffset {
                offset: 16,
                alignment: 32,
                ..
            }
        ),
        "{e}"
    );
    let e = err(file_with_tensor(&[4], 0, 1 << 20, 64));
    assert!(
        matches!(e, GgufError::TensorOutOfBounds { offset, .. } if offset == 1 << 20),
        "{e}"
    );
    let e = err(file_with_tensor(&[4], 0, u64::MAX - 31, 64)); // aligned, but start overflows
    assert!(matches!(e, GgufError::TensorOutOfBounds { .. }), "{e}");
    let e = err(file_with_tensor(&[4], 0, 0, 15)); // one byte short
    assert!(
        matches!(e, GgufError::TensorOutOfBounds { size: 16, .. }),
        "{e}"
    );
    let e = err(file_with_tensor(&[100], 12 /* Q4_K */, 0, 1024));
    assert!(
        matches!(
            e,
            GgufError::NotBlockMultiple {
                ne0: 100,
                block_size: 256,
                ..
            }
        ),
        "{e}"
    );
    let e = err(file_with_tensor(&[128, 2], 12, 0, 1024)); // 256 elements, but rows of half a block
    assert!(
        matches!(e, GgufError::NotBlockMultiple { ne0: 128, .. }),
        "{e}"
    );
    for dims in [
        &[1u64 << 32, 1 << 32][..],
        &[u64::MAX],
        &[1 << 40, 1 << 30, 1],
        &[0, u64::MAX],
    ] {
        let e = err(file_with_tensor(dims, 0, 0, 64));
        assert!(
            matches!(e, GgufError::ElementCountOverflow { .. }),
            "{dims:?}: {e}"
        );
    }
    let e = err(file_with_tensor(
        &[1 << 62],
        28, /* F64: 2^65 bytes */
        0,
        64,
    ));
    assert!(matches!(e, GgufError::ElementCountOverflow { .. }), "{e}");

    let mut r = Raw::header(3, 2, 0);
    r.tensor("t", &[4], 0, 0)
        .tensor("t", &[4], 0, 32)
        .pad(32)
        .zeros(64);
    let e = err(r.done());
    assert!(
        matches!(&e, GgufError::DuplicateTensor { tensor, .. } if tensor == "t"),
        "{e}"
    );
    let mut r = Raw::header(3, 1, 0);
    r.u64(2)
        .bytes(&[0xC3, 0x28])
        .u32(1)
        .u64(4)
        .u32(0)
        .u64(0)
        .pad(32)
        .zeros(16);
    assert!(matches!(
        err(r.done()),
        GgufError::InvalidUtf8 { offset: 32, .. }
    ));
}

#[test]
fn forged_metadata() {
    assert!(matches!(
        err(b"GGUF".to_vec()),
        GgufError::Truncated { offset: 4, .. }
    ));
    assert!(matches!(
        err(Vec::new()),
        GgufError::Truncated { offset: 0, .. }
    ));
    let e = err(b"GGML\x03\0\0\0".to_vec());
    assert!(
        matches!(e, GgufError::BadMagic { found } if &found == b"GGML"),
        "{e}"
    );
    for v in [0u32, 1, 4, u32::MAX] {
        assert!(
            matches!(err(Raw::header(v, 0, 0).done()), GgufError::UnsupportedVersion { version } if version == v)
        );
    }
    let e = err(Raw::header(3u32.swap_bytes(), 0, 0).done());
    assert!(e.to_string().contains("big-endian"), "{e}");

    let e = err(Raw::header(3, 0, 1).str("k").u32(13).u32(0).done());
    assert!(
        matches!(&e, GgufError::UnknownValueType { id: 13, key, offset: 33 } if key == "k"),
        "{e}"
    );
    let e = err(Raw::header(3, 0, 1).str("k").u32(9).u32(200).u64(0).done());
    assert!(
        matches!(e, GgufError::UnknownValueType { id: 200, .. }),
        "{e}"
    );
    let e = err(Raw::header(3, 0, 2).kv_u32("k", 1).kv_u32("k", 2).done());
    assert!(
        matches!(&e, GgufError::DuplicateKey { key, offset: 41 } if key == "k"),
        "{e}"
    );
    let e = err(Raw::header(3, 0, 1).str("b").u32(7).u8(2).done());
    assert!(matches!(e, GgufError::InvalidBool { byte: 2, .. }), "{e}");
    let e = err(Raw::header(3, 0, 1).u64(1).u8(0xFF).u32(4).u32(0).done());
    assert!(
        matches!(e, GgufError::InvalidUtf8 { offset: 32, .. }),
        "{e}"
    );
    let e = err(Raw::header(3, 0, 1)
        .str("s")
        .u32(8)
        .u64(3)
        .bytes(&[b'a', 0xE2, 0x82])
        .done());
    assert!(
        matches!(&e, GgufError::InvalidUtf8 { what, .. } if what.contains("'s'")),
        "{e}"
    );

    for a in [0u32, 3, 48] {
        let e = err(Raw::header(3, 0, 1).kv_u32("general.alignment", a).done());
        assert!(
            matches!(e, GgufError::BadAlignment { value } if value == a as u64),
            "{e}"
        );
    }
    let e = err(Raw::header(3, 0, 1)
        .str("general.alignment")
        .u32(8)
        .str("32")
        .done());
    assert!(matches!(e, GgufError::WrongType { .. }), "{e}");
    // A legal alignment is honoured: offset 16 is aligned to 16.
    let mut r = Raw::header(3, 1, 1);
    r.kv_u32("general.alignment", 16)
        .tensor("t", &[4], 0, 16)
        .pad(16)
        .zeros(32);
    assert_eq!(open_and_touch(r.done()).unwrap().alignment(), 16);
}

#[test]
fn array_nesting_is_capped() {
    let nested = |levels: usize| {
        let mut r = Raw::header(3, 0, 1);
        r.str("n").u32(9);
        for _ in 1..levels {
            r.u32(9).u64(1);
        }
        r.u32(0).u64(0);
        r.done()
    };
    let f = open_and_touch(nested(MAX_ARRAY_DEPTH)).unwrap();
    let mut v = f.get("n").unwrap();
    for _ in 1..MAX_ARRAY_DEPTH {
        v = &v.as_array().unwrap()[0];
    }
    assert_eq!(v, &GgufValue::Array(vec![]));
    let e = err(nested(MAX_ARRAY_DEPTH + 1));
    assert!(
        matches!(e, GgufError::ArrayTooDeep { depth, .. } if depth == MAX_ARRAY_DEPTH + 1),
        "{e}"
    );
    let e = err(nested(10_000));
    assert!(matches!(e, GgufError::ArrayTooDeep { .. }), "{e}");
}

#[test]
fn total_metadata_values_are_capped() {
    let n = ferrum_format::gguf::MAX_METADATA_VALUES; // the array itself is one more value
    let mut r = Raw::header(3, 0, 1);
    r.str("big").u32(9).u32(0).u64(n).zeros(n as usize);
    let e = err(r.done());
    assert!(
        matches!(&e, GgufError::MetadataTooLarge { key, .. } if key == "big"),
        "{e}"
    );
}

/// Bytes a key-value pair occupies on disk.
fn kv_len(key: &str, v: &GgufValue) -> usize {
    fn value_len(v: &GgufValue) -> usize {
        match v {
            GgufValue::U8(_) | GgufValue::I8(_) | GgufValue::Bool(_) => 1,
            GgufValue::U16(_) | GgufValue::I16(_) => 2,
            GgufValue::U32(_) | GgufValue::I32(_) | GgufValue::F32(_) => 4,
            GgufValue::U64(_) | GgufValue::I64(_) | GgufValue::F64(_) => 8,
            GgufValue::String(s) => 8 + s.len(),
            GgufValue::Array(a) => 12 + a.iter().map(value_len).sum::<usize>(),
        }
    }
    8 + key.len() + 4 + value_len(v)
}

/// The real default model's header. Parsing it whole takes tens of
/// milliseconds (three 150k-entry vocabulary arrays), so cutting it at every
/// one of its ~6 MB offsets is out of reach; instead cut (a) every offset of
/// a condensed copy (same keys, types and 291 tensor infos, vocabularies cut
/// to 64 entries), (b) every offset of the real header's first 64 KiB, and (c)
/// the real header around every key-value boundary plus 200 seeded offsets.
#[test]
fn default_model_header_truncations() {
    let Some(path) = default_model() else {
        eprintln!("default model not present; skipping");
        return;
    };
    let f = GgufFile::open(&path).unwrap();

    // (a) condensed header written by our writer, cut everywhere.
    let mut w = GgufWriter::new();
    for (k, v) in f.metadata() {
        let v = match v {
            GgufValue::Array(a) => GgufValue::Array(a.iter().take(64).cloned().collect()),
            v => v.clone(),
        };
        w.add_kv(k.clone(), v).unwrap();
    }
    for t in f.tensors() {
        w.add_tensor(t.name.clone(), &t.dims, t.ty).unwrap();
    }
    let mut header = Vec::new();
    let data_offset = w.begin(&mut header).unwrap().data_offset() as usize;
    assert_eq!(header.len(), data_offset);
    for cut in 0..=data_offset {
        assert!(
            open_and_touch(header[..cut].to_vec()).is_err(),
            "condensed header cut at {cut}"
        );
    }

    // (b), (c): the real bytes.
    let real = &f.bytes()[..f.data_offset() as usize + 4096];
    let mut cuts: Vec<usize> = (0..65536).collect();
    let mut at = 24;
    for (k, v) in f.metadata() {
        at += kv_len(k, v);
        cuts.extend(at.saturating_sub(2)..=at + 2);
    }
    cuts.extend([f.data_offset() as usize - 1, f.data_offset() as usize]);
    let mut rng = Rng(42);
    cuts.extend((0..200).map(|_| rng.below(real.len() as u64) as usize));
    for cut in cuts {
        assert!(
            open_and_touch(real[..cut].to_vec()).is_err(),
            "real header cut at {cut}"
        );
    }
}
