//! Writer → reader round trips, the exact byte layout llama.cpp expects,
//! writer-side validation, typed getters, and (when the default model is on
//! this machine) a byte-identical rewrite of a real llama.cpp-written file.

mod gguf_common;

use std::io::Write;

use ferrum_core::GgmlType;
use ferrum_format::gguf::{
    write_file, GgufError, GgufFile, GgufTensorData, GgufValue, GgufWriter, DEFAULT_ALIGNMENT,
};
use gguf_common::{default_model, realistic_file, realistic_metadata, realistic_tensors, Raw};

#[test]
fn realistic_round_trip() {
    let (bytes, data) = realistic_file(1000, 7);
    let f = GgufFile::from_bytes(bytes.clone()).expect("valid file");
    assert_eq!(f.version(), 3);
    assert_eq!(f.alignment(), DEFAULT_ALIGNMENT);
    assert_eq!(f.data_offset() % 32, 0);
    assert_eq!(f.metadata(), &realistic_metadata(1000)[..]);
    assert!(
        f.get("general.alignment").is_none(),
        "default alignment is not written"
    );

    let declared = realistic_tensors();
    assert_eq!(f.tensors().len(), declared.len());
    // llama.cpp requires each tensor to start exactly at the previous one's
    // end rounded up to the alignment, the first at 0.
    let mut expected_offset = 0u64;
    for ((t, (name, dims, ty)), (dname, bytes)) in f.tensors().iter().zip(&declared).zip(&data) {
        assert_eq!((&t.name, &t.dims, t.ty), (name, dims, *ty));
        assert_eq!(&t.name, dname);
        assert_eq!(t.offset, expected_offset, "{}", t.name);
        assert_eq!(f.tensor_data(t), &bytes[..], "{}", t.name);
        assert_eq!(f.tensor(name), Some(t));
        let end = t.offset + t.n_bytes();
        expected_offset = end.div_ceil(32) * 32;
        let pad = &bytes_of(&f)
            [(f.data_offset() + end) as usize..(f.data_offset() + expected_offset) as usize];
        assert!(
            pad.iter().all(|&b| b == 0),
            "padding after {} is zeros",
            t.name
        );
    }
    // Trailing padding after the last tensor, as llama.cpp writes it.
    assert_eq!(bytes.len() as u64, f.data_offset() + expected_offset);
}

fn bytes_of(f: &GgufFile) -> &[u8] {
    f.bytes()
}

#[test]
fn exact_layout_of_a_tiny_file() {
    let mut w = GgufWriter::new();
    w.add_kv("general.architecture", GgufValue::String("llama".into()))
        .unwrap();
    w.add_kv(
        "a",
        GgufValue::Array(vec![GgufValue::I16(-2), GgufValue::I16(3)]),
    )
    .unwrap();
    w.add_tensor("x", &[3], GgmlType::F32).unwrap();
    w.add_tensor("y", &[32], GgmlType::Q8_0).unwrap();
    let mut sink = w.begin(Vec::new()).unwrap();
    let x: Vec<u8> = (1..=12).collect();
    let y = vec![0xAB; 34];
    sink.write_tensor("x", &x).unwrap();
    sink.write_tensor("y", &y).unwrap();
    let got = sink.finish().unwrap();

    let mut r = Raw::header(3, 2, 2);
    r.str("general.architecture").u32(8).str("llama");
    r.str("a")
        .u32(9)
        .u32(3)
        .u64(2)
        .bytes(&(-2i16).to_le_bytes())
        .bytes(&3i16.to_le_bytes());
    r.tensor("x", &[3], 0, 0).tensor("y", &[32], 8, 32).pad(32);
    r.bytes(&x).pad(32).bytes(&y).pad(32);
    assert_eq!(got, r.done());
}

#[test]
fn custom_alignment_is_written_and_honoured() {
    let mut w = GgufWriter::new();
    w.set_alignment(64).unwrap();
    w.add_kv("k", GgufValue::U8(1)).unwrap();
    w.add_tensor("a", &[3], GgmlType::F32).unwrap();
    w.add_tensor("b", &[5], GgmlType::F16).unwrap();
    let mut sink = w.begin(Vec::new()).unwrap();
    sink.write_tensor("a", &[1; 12]).unwrap();
    sink.write_tensor("b", &[2; 10]).unwrap();
    let f = GgufFile::from_bytes(sink.finish().unwrap()).unwrap();
    assert_eq!(f.get("general.alignment"), Some(&GgufValue::U32(64)));
    assert_eq!(f.alignment(), 64);
    assert_eq!(f.data_offset() % 64, 0);
    assert_eq!(f.tensors()[1].offset, 64);
    assert_eq!(f.tensor_data(&f.tensors()[1]), &[2; 10]);
    assert_eq!(f.file_len(), f.data_offset() + 128);

    // Setting the default again rewrites the existing key rather than dropping it.
    let mut w = GgufWriter::new();
    w.add_kv("general.alignment", GgufValue::U32(32)).unwrap();
    w.set_alignment(16).unwrap();
    let f = GgufFile::from_bytes(w.begin(Vec::new()).unwrap().finish().unwrap()).unwrap();
    assert_eq!((f.alignment(), f.metadata().len()), (16, 1));
}

#[test]
fn version_2_files_read_like_version_3() {
    let (mut bytes, _) = realistic_file(10, 1);
    bytes[4..8].copy_from_slice(&2u32.to_le_bytes());
    let f = GgufFile::from_bytes(bytes).unwrap();
    assert_eq!(f.version(), 2);
    assert_eq!(f.tensors().len(), realistic_tensors().len());
}

#[test]
fn write_file_and_open() {
    let dir = std::env::temp_dir().join(format!("ferrum-gguf-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("t.gguf");
    let meta = vec![("general.name".to_string(), GgufValue::String("t".into()))];
    let a: Vec<u8> = (0..144).map(|i| i as u8).collect();
    let tensors = [
        GgufTensorData {
            name: "w",
            dims: &[256],
            ty: GgmlType::Q4K,
            data: &a,
        },
        GgufTensorData {
            name: "b",
            dims: &[2, 2],
            ty: GgmlType::F32,
            data: &[7; 16],
        },
    ];
    write_file(&path, &meta, &tensors).unwrap();
    let f = GgufFile::open(&path).unwrap();
    assert_eq!(f.get_str("general.name").unwrap(), "t");
    assert_eq!(f.tensor_data(f.tensor("w").unwrap()), &a[..]);
    assert_eq!(f.tensor_data(f.tensor("b").unwrap()), &[7; 16]);
    std::fs::remove_dir_all(&dir).unwrap();

    let err = GgufFile::open(&dir.join("missing.gguf")).unwrap_err();
    assert!(matches!(err, GgufError::Io { .. }));
    assert!(err.to_string().contains("missing.gguf"), "{err}");
}

#[test]
fn typed_getters() {
    let (bytes, _) = realistic_file(5, 2);
    let f = GgufFile::from_bytes(bytes).unwrap();
    assert_eq!(f.get_u32("qwen2.context_length").unwrap(), 32768);
    assert_eq!(f.get_u64("test.u64").unwrap(), u64::MAX - 5);
    assert_eq!(f.get_u64("test.u8").unwrap(), 200);
    assert_eq!(f.get_f32("qwen2.rope.freq_base").unwrap(), 1e6);
    assert_eq!(f.get_f32("test.i16").unwrap(), -30000.0);
    assert_eq!(f.get_str("general.architecture").unwrap(), "qwen2");
    assert!(f.get_bool("test.bool_t").unwrap());
    assert_eq!(f.get_array("tokenizer.ggml.tokens").unwrap().len(), 5);
    assert_eq!(
        f.get_array("test.nested").unwrap()[2],
        GgufValue::Array(vec![GgufValue::U32(3)])
    );

    let e = f.get_u32("nope").unwrap_err();
    assert!(
        matches!(&e, GgufError::MissingKey { key } if key == "nope"),
        "{e}"
    );
    let e = f.get_u64("test.i8").unwrap_err();
    assert!(
        matches!(&e, GgufError::WrongType { found: "i8", .. }),
        "{e}"
    );
    let e = f.get_u32("test.u64").unwrap_err();
    assert!(
        matches!(&e, GgufError::ValueOutOfRange { target: "u32", .. }),
        "{e}"
    );
    assert!(e.to_string().contains("test.u64"), "{e}");
    let e = f.get_str("test.u8").unwrap_err();
    assert!(
        matches!(
            &e,
            GgufError::WrongType {
                expected: "string",
                found: "u8",
                ..
            }
        ),
        "{e}"
    );
    assert!(matches!(
        f.get_bool("general.name"),
        Err(GgufError::WrongType { .. })
    ));
    assert!(matches!(
        f.get_array("test.f32"),
        Err(GgufError::WrongType { .. })
    ));
    assert!(matches!(
        f.get_f32("general.name"),
        Err(GgufError::WrongType { .. })
    ));
}

#[test]
fn writer_rejects_bad_input() {
    let mut w = GgufWriter::new();
    w.add_kv("k", GgufValue::U8(1)).unwrap();
    assert!(matches!(
        w.add_kv("k", GgufValue::U8(2)),
        Err(GgufError::KeyAlreadyAdded { .. })
    ));
    let mixed = GgufValue::Array(vec![GgufValue::U8(1), GgufValue::I8(1)]);
    let e = w.add_kv("m", mixed).unwrap_err();
    assert!(
        matches!(&e, GgufError::InvalidValue { key, .. } if key == "m"),
        "{e}"
    );
    let mut deep = GgufValue::Array(vec![GgufValue::U8(1)]);
    for _ in 0..8 {
        deep = GgufValue::Array(vec![deep]);
    }
    assert!(matches!(
        w.add_kv("deep", deep),
        Err(GgufError::InvalidValue { .. })
    ));
    assert!(matches!(
        w.add_kv("general.alignment", GgufValue::U32(48)),
        Err(GgufError::BadAlignment { value: 48 })
    ));
    assert!(matches!(
        w.add_kv("general.alignment", GgufValue::U64(64)),
        Err(GgufError::WrongType { .. })
    ));
    assert!(matches!(
        w.set_alignment(0),
        Err(GgufError::BadAlignment { value: 0 })
    ));

    w.add_tensor("a", &[32], GgmlType::F32).unwrap();
    assert!(matches!(
        w.add_tensor("a", &[32], GgmlType::F32),
        Err(GgufError::TensorAlreadyAdded { .. })
    ));
    assert!(matches!(
        w.add_tensor("q", &[100], GgmlType::Q4K),
        Err(GgufError::NotBlockMultiple { .. })
    ));
    assert!(matches!(
        w.add_tensor("z", &[1, 1, 1, 1, 1], GgmlType::F32),
        Err(GgufError::BadDimCount { n_dims: 5, .. })
    ));
    assert!(matches!(
        w.add_tensor("o", &[u64::MAX, 2], GgmlType::F32),
        Err(GgufError::ElementCountOverflow { .. })
    ));
    let long = "n".repeat(64);
    assert!(matches!(
        w.add_tensor(long, &[4], GgmlType::F32),
        Err(GgufError::TensorNameTooLong { len: 64, .. })
    ));
    w.add_tensor("n".repeat(63), &[4], GgmlType::F32).unwrap();
    assert!(matches!(
        w.add_tensor("e", &[4, 0], GgmlType::F32),
        Err(GgufError::ZeroDim { .. })
    ));
    w.add_tensor("b", &[4], GgmlType::F32).unwrap();

    let mut sink = w.begin(Vec::new()).unwrap();
    assert_eq!(sink.next_tensor().map(|t| t.name.as_str()), Some("a"));
    assert!(matches!(
        sink.write_tensor("b", &[0; 16]),
        Err(GgufError::TensorOrder { .. })
    ));
    assert!(matches!(
        sink.write_tensor("a", &[0; 16]),
        Err(GgufError::TensorSizeMismatch {
            expected: 128,
            got: 16,
            ..
        })
    ));
    sink.write_tensor("a", &[0; 128]).unwrap();
    let e = sink.finish().unwrap_err();
    assert!(
        matches!(
            &e,
            GgufError::MissingTensorData {
                written: 1,
                declared: 3,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn write_errors_surface() {
    struct Failing;
    impl Write for Failing {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::Error::other("disk full"))
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let w = GgufWriter::new();
    assert!(matches!(w.begin(Failing), Err(GgufError::Write(_))));
}

/// Rewrite the real default model (written by llama.cpp) with our writer,
/// streaming, and compare every byte: header, infos, padding and data.
#[test]
fn default_model_rewrites_byte_identically() {
    let Some(path) = default_model() else {
        eprintln!("default model not present; skipping");
        return;
    };
    let f = GgufFile::open(&path).unwrap();
    assert_eq!(f.version(), 3);
    let mut w = GgufWriter::new();
    for (k, v) in f.metadata() {
        w.add_kv(k.clone(), v.clone()).unwrap();
    }
    for t in f.tensors() {
        w.add_tensor(t.name.clone(), &t.dims, t.ty).unwrap();
    }
    struct Compare<'a> {
        want: &'a [u8],
        pos: usize,
    }
    impl Write for Compare<'_> {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let end = self.pos + buf.len();
            if self.want.get(self.pos..end) != Some(buf) {
                let first = (0..buf.len())
                    .find(|&i| self.want.get(self.pos + i) != Some(&buf[i]))
                    .unwrap_or(0);
                return Err(std::io::Error::other(format!(
                    "first difference at byte {}",
                    self.pos + first
                )));
            }
            self.pos = end;
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut sink = w
        .begin(Compare {
            want: f.bytes(),
            pos: 0,
        })
        .unwrap();
    assert_eq!(sink.data_offset(), f.data_offset());
    assert_eq!(sink.tensors(), f.tensors());
    for t in f.tensors() {
        sink.write_tensor(&t.name, f.tensor_data(t)).unwrap();
    }
    let cmp = sink.finish().unwrap();
    assert_eq!(cmp.pos, f.bytes().len());
}

/// Regenerates the committed fuzz seeds: `cargo test -p ferrum-format --test
/// gguf_roundtrip -- --ignored write_fuzz_seeds`.
#[test]
#[ignore]
fn write_fuzz_seeds() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds/gguf_parse");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("realistic.gguf"), realistic_file(8, 3).0).unwrap();
    let mut w = GgufWriter::new();
    w.set_alignment(16).unwrap();
    w.add_kv("general.architecture", GgufValue::String("llama".into()))
        .unwrap();
    w.add_kv(
        "n",
        GgufValue::Array(vec![GgufValue::Array(vec![GgufValue::U16(1)])]),
    )
    .unwrap();
    w.add_tensor("t", &[32, 2], GgmlType::Q8_0).unwrap();
    let mut sink = w.begin(Vec::new()).unwrap();
    sink.write_tensor("t", &[1; 68]).unwrap();
    std::fs::write(dir.join("tiny.gguf"), sink.finish().unwrap()).unwrap();
}
