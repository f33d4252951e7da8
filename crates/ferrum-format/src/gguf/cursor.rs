//! A bounds-checked little-endian reader over a byte slice. Every read names
//! what it was reading so that a truncated file reports where and why.

use super::GgufError;

pub(crate) struct Cursor<'a> {
    buf: &'a [u8],
    /// Invariant: `pos <= buf.len()`.
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Cursor { buf, pos: 0 }
    }

    /// Current absolute byte offset.
    pub(crate) fn pos(&self) -> u64 {
        self.pos as u64
    }

    pub(crate) fn remaining(&self) -> u64 {
        self.buf.len().saturating_sub(self.pos) as u64
    }

    /// The next `n` bytes, or `Truncated` naming `what`.
    pub(crate) fn take(
        &mut self,
        n: u64,
        what: impl FnOnce() -> String,
    ) -> Result<&'a [u8], GgufError> {
        let slice = usize::try_from(n)
            .ok()
            .and_then(|n| self.pos.checked_add(n))
            .and_then(|end| self.buf.get(self.pos..end).map(|s| (s, end)));
        match slice {
            Some((s, end)) => {
                self.pos = end;
                Ok(s)
            }
            None => Err(GgufError::Truncated {
                offset: self.pos(),
                what: what(),
                needed: n,
                available: self.remaining(),
            }),
        }
    }

    fn array<const N: usize>(
        &mut self,
        what: impl FnOnce() -> String,
    ) -> Result<[u8; N], GgufError> {
        let s = self.take(N as u64, what)?;
        // `take` returned exactly N bytes; zip copies them without a length check that could panic.
        let mut out = [0u8; N];
        for (o, b) in out.iter_mut().zip(s) {
            *o = *b;
        }
        Ok(out)
    }

    pub(crate) fn u8(&mut self, what: impl FnOnce() -> String) -> Result<u8, GgufError> {
        self.array(what).map(u8::from_le_bytes)
    }
    pub(crate) fn i8(&mut self, what: impl FnOnce() -> String) -> Result<i8, GgufError> {
        self.array(what).map(i8::from_le_bytes)
    }
    pub(crate) fn u16(&mut self, what: impl FnOnce() -> String) -> Result<u16, GgufError> {
        self.array(what).map(u16::from_le_bytes)
    }
    pub(crate) fn i16(&mut self, what: impl FnOnce() -> String) -> Result<i16, GgufError> {
        self.array(what).map(i16::from_le_bytes)
    }
    pub(crate) fn u32(&mut self, what: impl FnOnce() -> String) -> Result<u32, GgufError> {
        self.array(what).map(u32::from_le_bytes)
    }
    pub(crate) fn i32(&mut self, what: impl FnOnce() -> String) -> Result<i32, GgufError> {
        self.array(what).map(i32::from_le_bytes)
    }
    pub(crate) fn u64(&mut self, what: impl FnOnce() -> String) -> Result<u64, GgufError> {
        self.array(what).map(u64::from_le_bytes)
    }
    pub(crate) fn i64(&mut self, what: impl FnOnce() -> String) -> Result<i64, GgufError> {
        self.array(what).map(i64::from_le_bytes)
    }
    pub(crate) fn f32(&mut self, what: impl FnOnce() -> String) -> Result<f32, GgufError> {
        self.array(what).map(f32::from_le_bytes)
    }
    pub(crate) fn f64(&mut self, what: impl FnOnce() -> String) -> Result<f64, GgufError> {
        self.array(what).map(f64::from_le_bytes)
    }

    /// A GGUF string: u64 byte length, then that many UTF-8 bytes. The length
    /// is checked against the bytes left before anything is allocated.
    pub(crate) fn string(&mut self, what: impl Fn() -> String) -> Result<String, GgufError> {
        let len_at = self.pos();
        let len = self.u64(|| format!("length of {}", what()))?;
        let remaining = self.remaining();
        if len > remaining {
            return Err(GgufError::StringTooLong {
                offset: len_at,
                what: what(),
                len,
                remaining,
            });
        }
        let start = self.pos();
        let bytes = self.take(len, &what)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_owned()),
            Err(_) => Err(GgufError::InvalidUtf8 {
                offset: start,
                what: what(),
            }),
        }
    }
}
