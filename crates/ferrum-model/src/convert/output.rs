//! Output files: created (and so checked writable) before any work, and
//! removed again if the write does not complete.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use ferrum_format::gguf::GgufError;

use super::ConvertError;

/// A file being written; dropped without [`OutFile::keep`], it is deleted.
pub struct OutFile {
    path: PathBuf,
    file: Option<File>,
    keep: bool,
}

impl OutFile {
    /// Create (truncate) `path` now, so an unwritable path fails first.
    pub fn create(path: &Path) -> Result<OutFile, ConvertError> {
        let file = File::create(path).map_err(|source| ConvertError::Output { path: path.to_path_buf(), error: source })?;
        Ok(OutFile { path: path.to_path_buf(), file: Some(file), keep: false })
    }

    /// The buffered writer over the file (once).
    pub fn writer(&mut self) -> Result<BufWriter<File>, ConvertError> {
        let file = self.file.take().ok_or_else(|| self.err(std::io::Error::other("writer taken twice")))?;
        Ok(BufWriter::with_capacity(8 << 20, file))
    }

    pub fn err(&self, source: std::io::Error) -> ConvertError {
        ConvertError::Output { path: self.path.clone(), error: source }
    }

    /// A GGUF writer error, with write failures attributed to this file.
    pub fn gguf_err(&self, e: GgufError) -> ConvertError {
        match e {
            GgufError::Write(source) => self.err(source),
            other => ConvertError::Gguf(other),
        }
    }

    pub fn keep(mut self) {
        self.keep = true;
    }
}

impl Drop for OutFile {
    fn drop(&mut self) {
        if !self.keep {
            self.file = None;
            // Best effort: the error being returned matters more.
            let _ = std::fs::remove_file(&self.path);
        }
    }
}
