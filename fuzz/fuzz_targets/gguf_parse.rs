//! Fuzz the GGUF reader: any byte string must either fail with an error or
//! open into a file whose every tensor slice has exactly its declared size.
#![no_main]

use ferrum_format::gguf::GgufFile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(file) = GgufFile::from_bytes(data.to_vec()) else {
        return;
    };
    let mut checksum = 0u8;
    for t in file.tensors() {
        let bytes = file.tensor_data(t);
        assert_eq!(bytes.len() as u64, t.n_bytes(), "tensor {}", t.name);
        assert_eq!(t.offset % file.alignment(), 0);
        checksum ^= bytes.iter().fold(0u8, |a, &b| a ^ b);
        assert!(file.tensor(&t.name).is_some());
    }
    for (key, value) in file.metadata() {
        assert!(file.get(key).is_some());
        let _ = (value.as_u64(), value.as_i64(), value.as_f32(), value.as_str(), value.as_array());
        let _ = (file.get_u32(key), file.get_f32(key), file.get_str(key), file.get_bool(key));
    }
    assert!(file.data_offset() % file.alignment() == 0);
    std::hint::black_box(checksum);
});
