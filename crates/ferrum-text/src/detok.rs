//! Incremental detokenization: token ids in, text out, one token at a time.
//!
//! Tokens stand for bytes ([`Tokenizer::token_bytes`]); a character of
//! several bytes may be split across tokens (emoji and CJK often are with
//! byte-level vocabularies). The detokenizer keeps the bytes of an
//! unfinished character back until the rest arrives, so the stream never
//! shows a broken character, and the concatenation of everything it emits
//! (plus [`Detokenizer::finish`]) equals [`Tokenizer::decode`] of the same ids:
//! byte sequences that can never become valid UTF-8 turn into U+FFFD exactly
//! where a one-shot lossy decode puts them.

use crate::tokenizer::{PieceEncoding, Tokenizer};
use crate::TextError;

/// Streaming decoder state of one sequence. It holds no reference to the
/// tokenizer, so an engine can keep one per request as plain data.
#[derive(Clone, Debug, Default)]
pub struct Detokenizer {
    /// Bytes of an incomplete UTF-8 character at the end of the stream (at most 3).
    pending: Vec<u8>,
    skip_special: bool,
    /// SentencePiece: the first piece's prefix space is not text (as in `decode`).
    strip_first_space: bool,
    /// Whether any byte has been seen yet (for `strip_first_space`).
    started: bool,
}

impl Detokenizer {
    /// A detokenizer for ids of `tok`; special tokens are dropped when `skip_special`.
    pub fn new(tok: &Tokenizer, skip_special: bool) -> Self {
        Detokenizer {
            pending: Vec::new(),
            skip_special,
            strip_first_space: tok.piece_encoding() == PieceEncoding::SentencePiece,
            started: false,
        }
    }

    /// A detokenizer that continues an earlier stream (no prefix-space stripping).
    pub fn continuing(tok: &Tokenizer, skip_special: bool) -> Self {
        let mut d = Self::new(tok, skip_special);
        d.started = true;
        d
    }

    /// Adds one token; returns the text that became complete (often empty
    /// while a multi-byte character is still open).
    pub fn push(&mut self, tok: &Tokenizer, id: u32) -> Result<String, TextError> {
        if self.skip_special && tok.is_special(id) {
            return Ok(String::new());
        }
        let bytes = tok.token_bytes(id).ok_or(TextError::TokenOutOfRange {
            id,
            vocab_size: tok.vocab_size(),
        })?;
        let mut bytes = bytes.as_slice();
        if !self.started && !bytes.is_empty() {
            self.started = true;
            if self.strip_first_space && bytes.first() == Some(&b' ') {
                bytes = &bytes[1..];
            }
        }
        self.pending.extend_from_slice(bytes);
        Ok(self.drain(false))
    }

    /// Adds several tokens.
    pub fn push_all(&mut self, tok: &Tokenizer, ids: &[u32]) -> Result<String, TextError> {
        let mut out = String::new();
        for &id in ids {
            out.push_str(&self.push(tok, id)?);
        }
        Ok(out)
    }

    /// Ends the stream: held-back bytes of a character that never completed
    /// become U+FFFD (as a one-shot decode shows them).
    pub fn finish(&mut self) -> String {
        self.drain(true)
    }

    /// Bytes held back waiting for the rest of a character.
    pub fn pending_bytes(&self) -> usize {
        self.pending.len()
    }

    /// Moves every complete character (and replacement characters for
    /// invalid bytes) out of `pending`; keeps an unfinished tail unless `eof`.
    fn drain(&mut self, eof: bool) -> String {
        let mut out = String::new();
        let mut rest: &[u8] = &self.pending;
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    out.push_str(s);
                    rest = &[];
                    break;
                }
                Err(e) => {
                    let (good, bad) = rest.split_at(e.valid_up_to());
                    // `good` is valid by construction of `valid_up_to`.
                    out.push_str(std::str::from_utf8(good).unwrap_or_default());
                    match e.error_len() {
                        // An invalid sequence: one U+FFFD for it, as `from_utf8_lossy` does.
                        Some(n) => {
                            out.push('\u{FFFD}');
                            rest = &bad[n..];
                        }
                        // A character cut at the end: wait for more bytes.
                        None if !eof => {
                            rest = bad;
                            break;
                        }
                        None => {
                            out.push('\u{FFFD}');
                            rest = &[];
                            break;
                        }
                    }
                }
            }
        }
        let keep = rest.len();
        let start = self.pending.len() - keep;
        self.pending.drain(..start);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain_bytes(chunks: &[&[u8]]) -> (Vec<String>, String) {
        let mut d = Detokenizer::default();
        let mut outs = Vec::new();
        for c in chunks {
            d.pending.extend_from_slice(c);
            outs.push(d.drain(false));
        }
        (outs, d.finish())
    }

    #[test]
    fn split_characters_are_held_back() {
        let euro = "€".as_bytes(); // 3 bytes
        let (outs, tail) = drain_bytes(&[b"a", &euro[..1], &euro[1..2], &euro[2..], b"b"]);
        assert_eq!(outs, ["a", "", "", "€", "b"]);
        assert_eq!(tail, "");
    }

    #[test]
    fn invalid_bytes_match_lossy_decoding() {
        let chunks: [&[u8]; 4] = [b"x\xff", b"\xe2\x82", b"y", b"\xf0\x9f"];
        let all: Vec<u8> = chunks.concat();
        let (outs, tail) = drain_bytes(&chunks);
        assert_eq!(outs.concat() + &tail, String::from_utf8_lossy(&all));
    }
}
