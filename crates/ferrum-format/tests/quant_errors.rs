//! Size checks, unsupported types, and adversarial bytes (NaN/inf scales,
//! all-0xFF blocks): errors are typed, decoding never panics.

mod quant_util;

use ferrum_core::GgmlType;
use ferrum_format::quant::{
    can_quantize, dequantize, dequantize_to_vec, get_scale_min_k4, quantize, quantize_into,
    QuantError, IQ4NL_TABLE,
};
use quant_util::{decoded_types, Rng};

#[test]
fn length_mismatch_is_reported() {
    for ty in decoded_types() {
        let n = 2 * ty.block_size();
        let bytes = 2 * ty.type_size();
        let mut out = vec![0.0; n];
        for wrong in [bytes - 1, bytes + 1, 0] {
            let err = dequantize(ty, &vec![0u8; wrong], &mut out).unwrap_err();
            assert_eq!(
                err,
                QuantError::LengthMismatch {
                    ty,
                    elements: n,
                    bytes: wrong,
                    expected: bytes as u64
                }
            );
            let msg = err.to_string();
            assert!(
                msg.contains(ty.name()) && msg.contains(&wrong.to_string()),
                "{msg}"
            );
        }
        assert!(dequantize(ty, &vec![0u8; bytes], &mut out).is_ok());
        if ty.block_size() > 1 {
            let mut odd = vec![0.0; n - 1];
            let err = dequantize(ty, &vec![0u8; bytes], &mut odd).unwrap_err();
            assert!(
                matches!(err, QuantError::NotBlockMultiple { elements, .. } if elements == n - 1),
                "{err}"
            );
        }
    }
}

#[test]
fn quantize_size_errors() {
    for ty in GgmlType::ALL.into_iter().filter(|t| can_quantize(*t)) {
        let n = 2 * ty.block_size();
        let x = vec![0.5f32; n];
        let mut dst = vec![0u8; 2 * ty.type_size() + 3];
        let err = quantize_into(ty, &x, &mut dst).unwrap_err();
        assert!(
            matches!(err, QuantError::LengthMismatch { .. }),
            "{ty}: {err}"
        );
        if ty.block_size() > 1 {
            let err = quantize(ty, &x[..n - 1]).unwrap_err();
            assert!(
                matches!(err, QuantError::NotBlockMultiple { .. }),
                "{ty}: {err}"
            );
        }
    }
}

#[test]
fn unsupported_types() {
    for ty in [
        GgmlType::I8,
        GgmlType::I16,
        GgmlType::I32,
        GgmlType::I64,
        GgmlType::F64,
    ] {
        let err = dequantize(ty, &[0u8; 8], &mut [0.0f32; 1]).unwrap_err();
        assert!(
            matches!(
                err,
                QuantError::Unsupported {
                    op: "dequantize",
                    ..
                }
            ),
            "{err}"
        );
    }
    for ty in [
        GgmlType::Q2K,
        GgmlType::Q3K,
        GgmlType::Q8_1,
        GgmlType::IQ4NL,
        GgmlType::IQ4XS,
        GgmlType::I32,
    ] {
        assert!(!can_quantize(ty));
        let err = quantize(ty, &[0.0; 256]).unwrap_err();
        assert_eq!(err, QuantError::Unsupported { ty, op: "quantize" });
        assert!(err.to_string().contains(ty.name()));
    }
    for ty in [
        GgmlType::Q8_0,
        GgmlType::Q4_0,
        GgmlType::Q5_0,
        GgmlType::Q4K,
        GgmlType::Q5K,
        GgmlType::Q6K,
    ] {
        assert!(can_quantize(ty), "{ty}");
    }
}

#[test]
fn forged_element_count_does_not_allocate() {
    // A huge claimed count with a tiny buffer fails the size check before
    // any allocation.
    for ty in decoded_types() {
        let n = (usize::MAX / 8) / ty.block_size() * ty.block_size();
        let err = dequantize_to_vec(ty, &[0u8; 64], n).unwrap_err();
        assert!(
            matches!(
                err,
                QuantError::LengthMismatch { .. } | QuantError::SizeOverflow { .. }
            ),
            "{ty}: {err}"
        );
    }
}

#[test]
fn adversarial_bytes_do_not_panic() {
    let mut rng = Rng::new(42);
    for ty in decoded_types() {
        let n = 4 * ty.block_size().max(64);
        let len = ty.bytes_for(n as u64).unwrap() as usize;
        let patterns: Vec<Vec<u8>> = vec![
            vec![0xff; len],
            vec![0x00; len],
            vec![0x7c; len], // f16 0x7c7c: NaN; f32 0x7c7c7c7c: huge
            (0..len)
                .map(|i| if i % 2 == 0 { 0x00 } else { 0x7c })
                .collect(), // f16 +inf scales
            rng.bytes(len),
        ];
        for (p, bytes) in patterns.iter().enumerate() {
            let y = dequantize_to_vec(ty, bytes, n).unwrap();
            assert_eq!(y.len(), n);
            if p == 1 {
                // Zero bytes mean zero scales, so every value is (+/-) 0.
                assert!(
                    y.iter().all(|v| *v == 0.0),
                    "{ty}: zero bytes decode to non-zero"
                );
            }
        }
    }
}

#[test]
fn iq4_table_and_scale_helper() {
    assert_eq!(IQ4NL_TABLE[0], -127);
    assert_eq!(IQ4NL_TABLE[15], 113);
    assert!(IQ4NL_TABLE.windows(2).all(|w| w[0] < w[1]));
    let packed = [0xffu8; 12];
    for j in 0..8 {
        assert_eq!(get_scale_min_k4(j, &packed), (63, 63));
    }
}
