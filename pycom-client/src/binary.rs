//! Binary attachments: extra frames after a request's or reply's body.
//!
//! Outgoing data is a [`Binary`] (from bytes, a reader or a file). Incoming
//! data is an [`Attachment`]: in memory, or, above the spill threshold,
//! written to a temporary file that is deleted when the attachment is
//! dropped. [`Limits`] bounds the total size on both sides.

use std::borrow::Cow;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// Size limits for attachments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most bytes all attachments of one message may hold together.
    pub max_total_bytes: usize,
    /// Attachments larger than this are kept in a temporary file.
    pub spill_threshold: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_total_bytes: 64 * 1024 * 1024,
            spill_threshold: 1024 * 1024,
        }
    }
}

impl Limits {
    /// Check the total size of outgoing attachments.
    pub fn check_outgoing(&self, attachments: &[Binary]) -> Result<(), String> {
        self.check_total(attachments.iter().map(Binary::len).sum())
    }

    fn check_total(&self, total: usize) -> Result<(), String> {
        if total > self.max_total_bytes {
            return Err(format!(
                "attachments of {total} bytes exceed the limit of {} bytes",
                self.max_total_bytes
            ));
        }
        Ok(())
    }

    /// Turn received frames into attachments, spilling the large ones.
    pub fn receive<F: std::ops::Deref<Target = [u8]>>(
        &self,
        frames: Vec<F>,
    ) -> Result<Vec<Attachment>, String> {
        self.check_total(frames.iter().map(|f| f.len()).sum())?;
        frames
            .into_iter()
            .map(|frame| {
                let bytes: &[u8] = &frame;
                if bytes.len() > self.spill_threshold {
                    Attachment::spill(bytes)
                        .map_err(|e| format!("cannot spill an attachment to a temporary file: {e}"))
                } else {
                    Ok(Attachment::Memory(bytes.to_vec()))
                }
            })
            .collect()
    }
}

/// Bytes to send as an attachment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binary {
    data: Vec<u8>,
}

impl Binary {
    /// Bytes already in memory.
    pub fn from_bytes(data: impl Into<Vec<u8>>) -> Binary {
        Binary { data: data.into() }
    }

    /// Read everything from `reader` (a ZeroMQ frame is sent whole).
    pub fn from_reader(mut reader: impl Read) -> io::Result<Binary> {
        let mut data = Vec::new();
        reader.read_to_end(&mut data)?;
        Ok(Binary { data })
    }

    /// The contents of a file; the error names the file.
    pub fn from_path(path: impl AsRef<Path>) -> io::Result<Binary> {
        let path = path.as_ref();
        std::fs::read(path)
            .map(Binary::from_bytes)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot read {}: {e}", path.display())))
    }

    /// Size in bytes.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// True for an empty attachment.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The bytes to send.
    pub fn as_bytes(&self) -> &[u8] {
        &self.data
    }
}

/// A received attachment.
#[derive(Debug)]
pub enum Attachment {
    /// Kept in memory (at most the spill threshold).
    Memory(Vec<u8>),
    /// Spilled to a temporary file, deleted on drop.
    File {
        /// The temporary file.
        file: tempfile::NamedTempFile,
        /// Its size in bytes.
        len: u64,
    },
}

impl Attachment {
    fn spill(bytes: &[u8]) -> io::Result<Attachment> {
        let mut file = tempfile::NamedTempFile::new()?;
        file.write_all(bytes)?;
        file.flush()?;
        Ok(Attachment::File {
            file,
            len: bytes.len() as u64,
        })
    }

    /// Size in bytes.
    pub fn len(&self) -> u64 {
        match self {
            Attachment::Memory(b) => b.len() as u64,
            Attachment::File { len, .. } => *len,
        }
    }

    /// True for an empty attachment.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The temporary file holding a spilled attachment.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Attachment::Memory(_) => None,
            Attachment::File { file, .. } => Some(file.path()),
        }
    }

    /// The contents, read back from disk if spilled.
    pub fn bytes(&self) -> io::Result<Cow<'_, [u8]>> {
        match self {
            Attachment::Memory(b) => Ok(Cow::Borrowed(b)),
            Attachment::File { file, .. } => std::fs::read(file.path()).map(Cow::Owned),
        }
    }

    /// Write the contents to `path`.
    pub fn save(&self, path: impl AsRef<Path>) -> io::Result<PathBuf> {
        let path = path.as_ref();
        match self {
            Attachment::Memory(b) => std::fs::write(path, b)?,
            Attachment::File { file, .. } => {
                std::fs::copy(file.path(), path)?;
            }
        }
        Ok(path.to_path_buf())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_stay_in_memory_large_spill() {
        let limits = Limits {
            max_total_bytes: 1000,
            spill_threshold: 10,
        };
        let got = limits.receive(vec![vec![1u8; 5], vec![2u8; 50], vec![]]).unwrap();
        assert!(matches!(got[0], Attachment::Memory(_)));
        let path = got[1].path().unwrap().to_path_buf();
        assert_eq!(std::fs::read(&path).unwrap(), vec![2u8; 50]);
        assert_eq!(got[1].bytes().unwrap().len(), 50);
        assert!(got[2].is_empty());
        drop(got);
        assert!(!path.exists(), "spilled files are removed with their attachment");
    }

    #[test]
    fn totals_are_bounded_both_ways() {
        let limits = Limits {
            max_total_bytes: 10,
            spill_threshold: 100,
        };
        let err = limits.receive(vec![vec![0u8; 6], vec![0u8; 6]]).unwrap_err();
        assert!(err.contains("12 bytes exceed the limit of 10"), "{err}");
        assert!(limits
            .check_outgoing(&[Binary::from_bytes(vec![0u8; 11])])
            .is_err());
        assert!(limits
            .check_outgoing(&[Binary::from_bytes(vec![0u8; 10])])
            .is_ok());
    }

    #[test]
    fn from_path_names_the_file() {
        let err = Binary::from_path("/no/such/file").unwrap_err();
        assert!(err.to_string().contains("/no/such/file"));
        assert!(!Binary::from_path("/etc/hostname")
            .or_else(|_| Binary::from_path("/etc/passwd"))
            .unwrap()
            .is_empty());
    }
}
