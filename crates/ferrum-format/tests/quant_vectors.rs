//! Dequantization and quantization checked against gguf-py on the committed
//! vectors in tests/fixtures/quant/ (written by tools/gen_quant_vectors.py;
//! CI does not run the Python).
//!
//! Every type is required to be bit-identical to the reference, including
//! the K- and IQ-types (the codecs mirror gguf-py's f32 operation order; the
//! contract allows 1 ulp there, but we hold the stronger line). The only
//! latitude: a reference NaN must decode to some NaN.

mod quant_util;

use std::path::{Path, PathBuf};

use ferrum_core::GgmlType;
use ferrum_format::quant::{dequantize, quantize, quantize_into};
use quant_util::decoded_types;

struct Vectors {
    ty: GgmlType,
    src: Vec<u8>,
    reference: Vec<f32>,
    quant_input: Vec<f32>,
    quant_reference: Vec<u8>,
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> &'a [u8] {
        let out = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        out
    }
    fn u32(&mut self) -> usize {
        u32::from_le_bytes(self.take(4).try_into().unwrap()) as usize
    }
    fn f32s(&mut self, n: usize) -> Vec<f32> {
        self.take(4 * n)
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }
}

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/quant")
}

fn load(ty: GgmlType) -> Vectors {
    let path = fixture_dir().join(format!("{}.bin", ty.name()));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut r = Reader {
        bytes: &bytes,
        pos: 0,
    };
    assert_eq!(r.take(4), b"FQV1", "{}: bad magic", path.display());
    assert_eq!(r.u32() as u32, ty.id(), "{}: type id", path.display());
    let n_deq = r.u32();
    let n_src = r.u32();
    let src = r.take(n_src).to_vec();
    let reference = r.f32s(n_deq);
    let n_q = r.u32();
    let quant_input = r.f32s(n_q);
    let n_qb = r.u32();
    let quant_reference = r.take(n_qb).to_vec();
    assert_eq!(r.pos, bytes.len(), "{}: trailing bytes", path.display());
    Vectors {
        ty,
        src,
        reference,
        quant_input,
        quant_reference,
    }
}

fn assert_same(ty: GgmlType, what: &str, ours: &[f32], reference: &[f32]) {
    assert_eq!(ours.len(), reference.len());
    let mut bad = 0;
    for (i, (a, b)) in ours.iter().zip(reference).enumerate() {
        let same = a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan());
        if !same {
            if bad < 8 {
                eprintln!(
                    "{ty} {what}[{i}]: ours {a:e} ({:#010x}) ref {b:e} ({:#010x})",
                    a.to_bits(),
                    b.to_bits()
                );
            }
            bad += 1;
        }
    }
    assert_eq!(
        bad,
        0,
        "{ty} {what}: {bad} of {} values differ from gguf-py",
        ours.len()
    );
}

#[test]
fn dequantize_matches_gguf_py() {
    for ty in decoded_types() {
        let v = load(ty);
        let mut out = vec![0.0f32; v.reference.len()];
        dequantize(v.ty, &v.src, &mut out).unwrap();
        assert_same(ty, "aligned", &out, &v.reference);

        // Same bytes at an odd address: blocks are read unaligned.
        let mut shifted = vec![0u8; v.src.len() + 1];
        shifted[1..].copy_from_slice(&v.src);
        let mut out2 = vec![f32::NAN; v.reference.len()];
        dequantize(v.ty, &shifted[1..], &mut out2).unwrap();
        assert_same(ty, "unaligned", &out2, &v.reference);
    }
}

#[test]
fn quantize_matches_gguf_py() {
    let mut checked = Vec::new();
    for ty in decoded_types() {
        let v = load(ty);
        if v.quant_input.is_empty() {
            continue;
        }
        let ours = quantize(v.ty, &v.quant_input).unwrap();
        assert_eq!(ours.len(), v.quant_reference.len(), "{ty}: encoded length");
        let block = ty.type_size();
        for (i, (a, b)) in ours
            .chunks(block)
            .zip(v.quant_reference.chunks(block))
            .enumerate()
        {
            assert_eq!(a, b, "{ty}: block {i} differs from gguf-py's encoding");
        }
        // And into a misaligned destination.
        let mut shifted = vec![0u8; ours.len() + 1];
        quantize_into(v.ty, &v.quant_input, &mut shifted[1..]).unwrap();
        assert_eq!(&shifted[1..], &ours[..], "{ty}: unaligned encode");
        checked.push(ty);
    }
    for must in [
        GgmlType::Q8_0,
        GgmlType::Q4_0,
        GgmlType::Q5_0,
        GgmlType::F16,
        GgmlType::BF16,
    ] {
        assert!(
            checked.contains(&must),
            "no quantization vectors for {must}"
        );
    }
}
