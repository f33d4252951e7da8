//! GPT-2's reversible byte ↔ printable-char alphabet used by byte-level BPE
//! vocabularies: printable Latin-1 bytes map to themselves, the other 68
//! bytes map to U+0100.. in byte order (so ' ' is 'Ġ', '\n' is 'Ċ').

use std::sync::LazyLock;

fn is_printable(b: u8) -> bool {
    matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF)
}

/// `BYTE_TO_CHAR[b]` is the vocabulary spelling of byte `b`.
static BYTE_TO_CHAR: LazyLock<[char; 256]> = LazyLock::new(|| {
    let mut table = ['\0'; 256];
    let mut next_shifted = 0u32;
    for b in 0..=255u8 {
        let cp = if is_printable(b) {
            u32::from(b)
        } else {
            next_shifted += 1;
            255 + next_shifted
        };
        // cp < 256 + 68: always a valid scalar value.
        table[usize::from(b)] = char::from_u32(cp).unwrap_or('\u{FFFD}');
    }
    table
});

/// Inverse table indexed by code point (all alphabet chars are < U+0144).
static CHAR_TO_BYTE: LazyLock<[Option<u8>; 0x144]> = LazyLock::new(|| {
    let mut table = [None; 0x144];
    for (b, &c) in BYTE_TO_CHAR.iter().enumerate() {
        if let Some(slot) = table.get_mut(c as usize) {
            *slot = u8::try_from(b).ok();
        }
    }
    table
});

/// The byte a vocabulary char stands for, `None` outside the alphabet.
pub fn char_to_byte(c: char) -> Option<u8> {
    CHAR_TO_BYTE.get(c as usize).copied().flatten()
}

/// Decodes one byte-level token spelling to raw bytes; `None` when some
/// char is outside the alphabet (such tokens are not byte-level encoded).
pub fn decode_token(spelling: &str) -> Option<Vec<u8>> {
    spelling.chars().map(char_to_byte).collect()
}

/// Encodes raw bytes into the byte-level spelling.
pub fn encode_bytes(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|&b| BYTE_TO_CHAR[usize::from(b)])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_byte() {
        let all: Vec<u8> = (0..=255).collect();
        let s = encode_bytes(&all);
        assert_eq!(s.chars().count(), 256);
        assert_eq!(decode_token(&s).unwrap(), all);
        assert_eq!(encode_bytes(b" \n\t"), "ĠĊĉ");
        assert_eq!(encode_bytes(&[0x7F, 0xAD]), "ġŃ");
        assert_eq!(decode_token("Hello"), Some(b"Hello".to_vec()));
        assert_eq!(decode_token("<|im_start|>"), Some(b"<|im_start|>".to_vec()));
        assert_eq!(decode_token("中"), None);
    }
}
