//! safetensors reader: single files, directories, sharded indexes, every
//! dtype, and malformed input (which must error, never panic).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use ferrum_core::DType;
use ferrum_format::safetensors::{SafeTensors, SafetensorsError};
use safetensors::tensor::TensorView as StView;
use safetensors::Dtype;

/// A fresh, empty directory under cargo's per-test temp dir.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("st").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Serialises `(name, dtype, shape, bytes)` tensors into a safetensors buffer.
fn serialize(tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)]) -> Vec<u8> {
    let views: Vec<(String, StView<'_>)> = tensors
        .iter()
        .map(|(n, d, s, b)| (n.to_string(), StView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize(views, None::<HashMap<String, String>>).unwrap()
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}
fn f16_bytes(v: &[f32]) -> Vec<u8> {
    v.iter()
        .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
        .collect()
}
fn bf16_bytes(v: &[f32]) -> Vec<u8> {
    v.iter()
        .flat_map(|x| half::bf16::from_f32(*x).to_le_bytes())
        .collect()
}

const VALS: [f32; 6] = [0.0, 1.0, -2.5, 0.125, 65504.0, -0.000_061_035_156];

fn all_dtypes_file() -> Vec<u8> {
    serialize(&[
        ("w.f32", Dtype::F32, vec![2, 3], f32_bytes(&VALS)),
        ("w.f16", Dtype::F16, vec![3, 2], f16_bytes(&VALS)),
        (
            "w.bf16",
            Dtype::BF16,
            vec![6],
            bf16_bytes(&[0.0, 1.0, -2.5, 0.125, 65536.0, -3.0]),
        ),
        ("a.empty", Dtype::F32, vec![0, 4], vec![]),
    ])
}

#[test]
fn single_file_every_float_dtype() {
    let dir = scratch("single");
    let path = dir.join("x.safetensors");
    std::fs::write(&path, all_dtypes_file()).unwrap();
    let st = SafeTensors::open(&path).unwrap();

    let names: Vec<&str> = st.names().collect();
    assert_eq!(names, ["a.empty", "w.bf16", "w.f16", "w.f32"]);

    let t = st.get("w.f32").unwrap();
    assert_eq!(
        (t.dtype, t.shape.clone(), t.data.len()),
        (DType::F32, vec![2, 3], 24)
    );
    assert_eq!(st.to_f32("w.f32").unwrap(), VALS);

    let t = st.get("w.f16").unwrap();
    assert_eq!(
        (t.dtype, t.shape.clone(), t.numel()),
        (DType::F16, vec![3, 2], 6)
    );
    assert_eq!(st.to_f32("w.f16").unwrap(), VALS);

    let t = st.get("w.bf16").unwrap();
    assert_eq!(t.dtype, DType::BF16);
    assert_eq!(
        st.to_f32("w.bf16").unwrap(),
        [0.0, 1.0, -2.5, 0.125, 65536.0, -3.0]
    );

    let t = st.get("a.empty").unwrap();
    assert_eq!((t.shape.clone(), t.data.len()), (vec![0, 4], 0));
    assert!(st.to_f32("a.empty").unwrap().is_empty());

    assert!(st.get("nope").is_none());
    let err = st.to_f32("nope").unwrap_err();
    assert!(
        matches!(err, SafetensorsError::NotFound(ref n) if n == "nope"),
        "{err}"
    );
}

#[test]
fn unsupported_dtypes_are_listed_and_refused_by_name() {
    let dir = scratch("unsupported");
    let path = dir.join("x.safetensors");
    let bytes = serialize(&[
        ("ok", Dtype::F32, vec![1], f32_bytes(&[3.0])),
        ("pos_ids", Dtype::I64, vec![2], vec![0; 16]),
        ("d", Dtype::F64, vec![1], 1.5f64.to_le_bytes().to_vec()),
        ("q", Dtype::I8, vec![4], vec![1, 2, 3, 4]),
    ]);
    std::fs::write(&path, bytes).unwrap();
    let st = SafeTensors::open(&path).unwrap();
    assert_eq!(st.len(), 4);
    assert_eq!(
        st.unsupported(),
        [("d", "F64"), ("pos_ids", "I64"), ("q", "I8")]
    );
    assert!(st.get("pos_ids").is_none());
    let msg = st.tensor("pos_ids").unwrap_err().to_string();
    assert!(msg.contains("pos_ids") && msg.contains("I64"), "{msg}");
    let msg = st.to_f32("d").unwrap_err().to_string();
    assert!(msg.contains("'d'") && msg.contains("F64"), "{msg}");
    assert_eq!(st.to_f32("ok").unwrap(), [3.0]);
}

#[test]
fn directory_with_single_file() {
    let dir = scratch("dir_single");
    std::fs::write(dir.join("model.safetensors"), all_dtypes_file()).unwrap();
    let st = SafeTensors::open(&dir).unwrap();
    assert_eq!(st.len(), 4);
    assert_eq!(st.files().len(), 1);
}

#[test]
fn directory_without_checkpoint() {
    let dir = scratch("dir_empty");
    let err = SafeTensors::open(&dir).unwrap_err();
    assert!(matches!(err, SafetensorsError::NoCheckpoint(_)), "{err}");
    let err = SafeTensors::open(&dir.join("absent.safetensors")).unwrap_err();
    assert!(matches!(err, SafetensorsError::Io { .. }), "{err}");
}

/// Two shards: a/b in shard 1, c in shard 2, plus the index JSON.
fn write_sharded(dir: &Path, index: &str) {
    let s1 = serialize(&[
        ("a", Dtype::F32, vec![2], f32_bytes(&[1.0, 2.0])),
        ("b", Dtype::BF16, vec![1], bf16_bytes(&[4.0])),
    ]);
    let s2 = serialize(&[("c", Dtype::F16, vec![2, 1], f16_bytes(&[5.0, 6.0]))]);
    std::fs::write(dir.join("model-00001-of-00002.safetensors"), s1).unwrap();
    std::fs::write(dir.join("model-00002-of-00002.safetensors"), s2).unwrap();
    std::fs::write(dir.join("model.safetensors.index.json"), index).unwrap();
}

const GOOD_INDEX: &str = r#"{"metadata": {"total_size": 14}, "weight_map": {
  "a": "model-00001-of-00002.safetensors",
  "b": "model-00001-of-00002.safetensors",
  "c": "model-00002-of-00002.safetensors"}}"#;

#[test]
fn sharded_checkpoint() {
    let dir = scratch("sharded");
    write_sharded(&dir, GOOD_INDEX);
    for st in [
        SafeTensors::open(&dir).unwrap(),
        SafeTensors::open(&dir.join("model.safetensors.index.json")).unwrap(),
    ] {
        assert_eq!(st.names().collect::<Vec<_>>(), ["a", "b", "c"]);
        assert_eq!(st.files().len(), 2);
        assert_eq!(st.to_f32("a").unwrap(), [1.0, 2.0]);
        assert_eq!(st.to_f32("b").unwrap(), [4.0]);
        assert_eq!(st.to_f32("c").unwrap(), [5.0, 6.0]);
        assert_eq!(st.get("c").unwrap().shape, [2, 1]);
    }
}

fn open_err(dir: &Path) -> String {
    let err = SafeTensors::open(dir).unwrap_err();
    err.to_string()
}

#[test]
fn sharded_missing_shard_file() {
    let dir = scratch("sh_missing_file");
    let idx = GOOD_INDEX.replace("\"c\": \"model-00002", "\"c\": \"model-00003");
    write_sharded(&dir, &idx);
    let msg = open_err(&dir);
    assert!(
        msg.contains("model-00003-of-00002.safetensors") && msg.contains("does not exist"),
        "{msg}"
    );
}

#[test]
fn sharded_tensor_listed_but_absent() {
    let dir = scratch("sh_absent");
    let idx = GOOD_INDEX.replace(
        "\"a\":",
        "\"zz\": \"model-00002-of-00002.safetensors\", \"a\":",
    );
    write_sharded(&dir, &idx);
    let msg = open_err(&dir);
    assert!(
        msg.contains("'zz'") && msg.contains("model-00002-of-00002"),
        "{msg}"
    );
}

#[test]
fn sharded_tensor_in_wrong_shard() {
    let dir = scratch("sh_wrong");
    let idx = GOOD_INDEX.replace(
        "\"b\": \"model-00001-of-00002.safetensors\"",
        "\"b\": \"model-00002-of-00002.safetensors\"",
    );
    write_sharded(&dir, &idx);
    let msg = open_err(&dir);
    assert!(msg.contains("'b'"), "{msg}");
}

#[test]
fn sharded_same_tensor_in_two_shards() {
    let dir = scratch("sh_dup");
    write_sharded(&dir, GOOD_INDEX);
    let s2 = serialize(&[
        ("a", Dtype::F32, vec![1], f32_bytes(&[9.0])),
        ("c", Dtype::F16, vec![2, 1], f16_bytes(&[5.0, 6.0])),
    ]);
    std::fs::write(dir.join("model-00002-of-00002.safetensors"), s2).unwrap();
    let err = SafeTensors::open(&dir).unwrap_err();
    assert!(
        matches!(err, SafetensorsError::DuplicateTensor { ref tensor, .. } if tensor == "a"),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("model-00001-of-00002") && msg.contains("model-00002-of-00002"),
        "{msg}"
    );
}

#[test]
fn sharded_tensor_not_in_index() {
    let dir = scratch("sh_unlisted");
    let idx = GOOD_INDEX.replace("\"b\": \"model-00001-of-00002.safetensors\",", "");
    write_sharded(&dir, &idx);
    let msg = open_err(&dir);
    assert!(
        msg.contains("'b'") && msg.contains("does not list"),
        "{msg}"
    );
}

#[test]
fn bad_index_files() {
    for (i, (idx, needle)) in [
        ("{not json", "invalid JSON"),
        (r#"{"metadata": {}}"#, "weight_map"),
        (r#"{"weight_map": {}}"#, "empty"),
        (r#"{"weight_map": {"a": 3}}"#, "invalid JSON"),
        (
            r#"{"weight_map": {"a": "../evil.safetensors"}}"#,
            "plain file name",
        ),
        (
            r#"{"weight_map": {"a": "/abs.safetensors"}}"#,
            "plain file name",
        ),
        (
            r#"{"weight_map": {"a": "sub/x.safetensors"}}"#,
            "plain file name",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let dir = scratch(&format!("bad_index_{i}"));
        write_sharded(&dir, idx);
        let msg = open_err(&dir);
        assert!(msg.contains(needle), "index {idx}: {msg}");
    }
}

#[test]
fn malformed_files_error_without_panicking() {
    let good = all_dtypes_file();
    let header_len = u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("short_prefix", vec![1, 2, 3]),
        ("truncated_data", good[..good.len() - 3].to_vec()),
        ("truncated_header", good[..8 + header_len / 2].to_vec()),
        ("trailing_bytes", [good.clone(), vec![0u8; 4]].concat()),
        (
            "huge_header_len",
            [u64::MAX.to_le_bytes().to_vec(), b"{}".to_vec()].concat(),
        ),
        (
            "header_past_eof",
            [1000u64.to_le_bytes().to_vec(), b"{}".to_vec()].concat(),
        ),
    ];
    let mut bad_json = good.clone();
    bad_json[8] = b'[';
    cases.push(("bad_json", bad_json));
    let mut bad_utf8 = good.clone();
    bad_utf8[9] = 0xff;
    cases.push(("bad_utf8", bad_utf8));
    let hdr = br#"{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}"#;
    cases.push((
        "shape_size_mismatch",
        [
            (hdr.len() as u64).to_le_bytes().to_vec(),
            hdr.to_vec(),
            vec![0; 4],
        ]
        .concat(),
    ));
    let hdr = br#"{"x":{"dtype":"F33","shape":[1],"data_offsets":[0,4]}}"#;
    cases.push((
        "unknown_dtype",
        [
            (hdr.len() as u64).to_le_bytes().to_vec(),
            hdr.to_vec(),
            vec![0; 4],
        ]
        .concat(),
    ));
    let hdr = br#"{"x":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,4]}}"#;
    cases.push((
        "overflowing_shape",
        [
            (hdr.len() as u64).to_le_bytes().to_vec(),
            hdr.to_vec(),
            vec![0; 4],
        ]
        .concat(),
    ));
    let hdr = br#"{"x":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#;
    cases.push((
        "gap_in_offsets",
        [
            (hdr.len() as u64).to_le_bytes().to_vec(),
            hdr.to_vec(),
            vec![0; 8],
        ]
        .concat(),
    ));

    let dir = scratch("malformed");
    for (name, bytes) in cases {
        let path = dir.join(format!("{name}.safetensors"));
        std::fs::write(&path, &bytes).unwrap();
        let err = SafeTensors::open(&path).unwrap_err();
        assert!(
            matches!(err, SafetensorsError::Invalid { .. }),
            "{name}: {err}"
        );
        assert!(
            err.to_string().contains(&format!("{name}.safetensors")),
            "{name}: {err}"
        );
    }
}
