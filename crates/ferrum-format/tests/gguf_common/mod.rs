//! Shared helpers for the GGUF integration tests: a deterministic PRNG, a
//! realistic test file built with the writer, and a raw byte builder for
//! forging malformed headers by hand.
#![allow(dead_code)]

use ferrum_core::GgmlType;
use ferrum_format::gguf::{GgufTensorInfo, GgufValue, GgufWriter};

/// splitmix64: small, seeded, good enough for test data.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform-ish in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

/// Key-value pairs covering every value type, a large string array and
/// nested arrays.
pub fn realistic_metadata(n_tokens: usize) -> Vec<(String, GgufValue)> {
    use GgufValue::*;
    let tokens: Vec<GgufValue> = (0..n_tokens)
        .map(|i| String(format!("tok_{i}_\u{e9}\u{4e2d}")))
        .collect();
    let scores: Vec<GgufValue> = (0..n_tokens).map(|i| F32(-(i as f32) * 0.25)).collect();
    let types: Vec<GgufValue> = (0..n_tokens).map(|i| I32((i % 6) as i32)).collect();
    vec![
        ("general.architecture".into(), String("qwen2".into())),
        (
            "general.name".into(),
            String("Ferrum test \u{1f980} model".into()),
        ),
        ("test.u8".into(), U8(200)),
        ("test.i8".into(), I8(-100)),
        ("test.u16".into(), U16(60000)),
        ("test.i16".into(), I16(-30000)),
        ("test.u32".into(), U32(4_000_000_000)),
        ("test.i32".into(), I32(-2_000_000_000)),
        ("test.u64".into(), U64(u64::MAX - 5)),
        ("test.i64".into(), I64(i64::MIN + 7)),
        ("test.f32".into(), F32(1.0e-6)),
        ("test.f64".into(), F64(std::f64::consts::PI)),
        ("test.bool_t".into(), Bool(true)),
        ("test.bool_f".into(), Bool(false)),
        (
            "test.empty_string".into(),
            String(std::string::String::new()),
        ),
        ("qwen2.context_length".into(), U32(32768)),
        ("qwen2.rope.freq_base".into(), F32(1_000_000.0)),
        ("tokenizer.ggml.tokens".into(), Array(tokens)),
        ("tokenizer.ggml.scores".into(), Array(scores)),
        ("tokenizer.ggml.token_type".into(), Array(types)),
        (
            "test.bools".into(),
            Array(vec![Bool(true), Bool(false), Bool(true)]),
        ),
        ("test.u64s".into(), Array(vec![U64(1), U64(u64::MAX)])),
        (
            "test.nested".into(),
            Array(vec![
                Array(vec![U32(1), U32(2)]),
                Array(vec![]),
                Array(vec![U32(3)]),
            ]),
        ),
        (
            "test.nested_mixed_inner".into(),
            Array(vec![
                Array(vec![String("a".into()), String("bc".into())]),
                Array(vec![F64(0.5)]),
                Array(vec![Array(vec![I8(-1)])]),
            ]),
        ),
        ("test.empty_array".into(), Array(vec![])),
    ]
}

/// A dozen tensors of several types and ranks: (name, dims, type).
pub fn realistic_tensors() -> Vec<(String, Vec<u64>, GgmlType)> {
    use GgmlType::*;
    let t = |n: &str, d: &[u64], ty| (n.to_string(), d.to_vec(), ty);
    vec![
        t("token_embd.weight", &[256, 8], Q4K),
        t("output_norm.weight", &[64], F32),
        t("blk.0.attn_q.weight", &[64, 64], Q8_0),
        t("blk.0.attn_q.bias", &[64], F32),
        t("blk.0.attn_k.weight", &[64, 16], Q5_0),
        t("blk.0.attn_v.weight", &[256, 3], Q6K),
        t("blk.0.ffn_up.weight", &[32, 5], F16),
        t("blk.0.ffn_down.weight", &[32, 7], BF16),
        t("blk.0.ffn_gate_exps.weight", &[256, 2, 3], Q2K),
        t("blk.0.odd.weight", &[2, 3, 4, 5], F32),
        t("blk.0.iq.weight", &[32, 3], IQ4NL),
        t("blk.0.q40.weight", &[64, 1], Q4_0),
        t("blk.0.ids", &[7], I32),
        t("blk.0.f64", &[3], F64),
    ]
}

/// A file built from `realistic_metadata` + `realistic_tensors` with random
/// tensor bytes. Returns the file and each tensor's data.
pub fn realistic_file(n_tokens: usize, seed: u64) -> (Vec<u8>, Vec<(String, Vec<u8>)>) {
    let mut rng = Rng(seed);
    let mut w = GgufWriter::new();
    for (k, v) in realistic_metadata(n_tokens) {
        w.add_kv(k, v).expect("add_kv");
    }
    let tensors = realistic_tensors();
    for (name, dims, ty) in &tensors {
        w.add_tensor(name.clone(), dims, *ty).expect("add_tensor");
    }
    let mut sink = w.begin(Vec::new()).expect("begin");
    let infos: Vec<GgufTensorInfo> = sink.tensors().to_vec();
    let mut data = Vec::new();
    for info in &infos {
        let bytes = rng.bytes(info.n_bytes() as usize);
        sink.write_tensor(&info.name, &bytes).expect("write_tensor");
        data.push((info.name.clone(), bytes));
    }
    (sink.finish().expect("finish"), data)
}

/// Little-endian byte builder for hand-forged files.
#[derive(Default, Clone)]
pub struct Raw(pub Vec<u8>);

impl Raw {
    /// "GGUF", version, tensor count, kv count.
    pub fn header(version: u32, n_tensors: u64, n_kv: u64) -> Raw {
        let mut r = Raw::default();
        r.bytes(b"GGUF").u32(version).u64(n_tensors).u64(n_kv);
        r
    }
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.0.extend_from_slice(b);
        self
    }
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.bytes(&[v])
    }
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }
    pub fn str(&mut self, s: &str) -> &mut Self {
        self.u64(s.len() as u64).bytes(s.as_bytes())
    }
    /// A u32-valued key-value pair (value type 4).
    pub fn kv_u32(&mut self, key: &str, v: u32) -> &mut Self {
        self.str(key).u32(4).u32(v)
    }
    /// A tensor info.
    pub fn tensor(&mut self, name: &str, dims: &[u64], ty: u32, offset: u64) -> &mut Self {
        self.str(name).u32(dims.len() as u32);
        for &d in dims {
            self.u64(d);
        }
        self.u32(ty).u64(offset)
    }
    /// Zero padding to a multiple of `align`.
    pub fn pad(&mut self, align: usize) -> &mut Self {
        while !self.0.len().is_multiple_of(align) {
            self.0.push(0);
        }
        self
    }
    pub fn zeros(&mut self, n: usize) -> &mut Self {
        self.0.resize(self.0.len() + n, 0);
        self
    }
    pub fn done(&self) -> Vec<u8> {
        self.0.clone()
    }
}

/// Where the default model lives, if it is on this machine.
pub fn default_model() -> Option<std::path::PathBuf> {
    let from_env = std::env::var_os("FERRUM_DEFAULT_MODEL").map(std::path::PathBuf::from);
    let from_home = std::env::var_os("HOME").map(|h| {
        std::path::PathBuf::from(h)
            .join(".cache/ferrum/models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf")
    });
    from_env.into_iter().chain(from_home).find(|p| p.is_file())
}
