//! Byte-level reading and writing for the protocol's binary codecs.
//!
//! Owns bounds checking and nothing else: a `Reader` never panics on short input (it
//! returns [`WireError::Truncated`]), a `Writer` never panics on a short buffer (it
//! returns [`WireError::BufferTooSmall`] with the size needed so far). Integers are
//! big-endian. No allocation.

use core::fmt;

use crate::keys::fixed;

/// A codec failure at the byte level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WireError {
    /// The input ended before a field did.
    Truncated,
    /// Bytes were left over after the last field.
    TrailingBytes,
    /// The output buffer is too small.
    BufferTooSmall {
        /// Bytes the write needed at the point it failed (a lower bound of the total).
        required: usize,
    },
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated => f.write_str("input truncated"),
            Self::TrailingBytes => f.write_str("trailing bytes after the last field"),
            Self::BufferTooSmall { required } => {
                write!(f, "buffer too small: at least {required} bytes required")
            }
        }
    }
}

/// A cursor over input bytes.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, at: 0 }
    }

    /// Bytes consumed so far.
    pub(crate) fn position(&self) -> usize {
        self.at
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let end = self.at.checked_add(n).ok_or(WireError::Truncated)?;
        let out = self.bytes.get(self.at..end).ok_or(WireError::Truncated)?;
        self.at = end;
        Ok(out)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        self.take(N).map(fixed)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16, WireError> {
        self.array().map(u16::from_be_bytes)
    }

    pub(crate) fn u32(&mut self) -> Result<u32, WireError> {
        self.array().map(u32::from_be_bytes)
    }

    pub(crate) fn u64(&mut self) -> Result<u64, WireError> {
        self.array().map(u64::from_be_bytes)
    }

    /// A `u16` length followed by that many bytes.
    pub(crate) fn bytes16(&mut self) -> Result<&'a [u8], WireError> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }

    /// Everything not yet read.
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        let out = &self.bytes[self.at..];
        self.at = self.bytes.len();
        out
    }

    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len() - self.at
    }

    /// Succeeds only when every byte has been read.
    pub(crate) fn finish(&self) -> Result<(), WireError> {
        if self.at == self.bytes.len() {
            Ok(())
        } else {
            Err(WireError::TrailingBytes)
        }
    }
}

/// A cursor over an output buffer.
pub(crate) struct Writer<'a> {
    out: &'a mut [u8],
    at: usize,
}

impl<'a> Writer<'a> {
    pub(crate) fn new(out: &'a mut [u8]) -> Self {
        Self { out, at: 0 }
    }

    pub(crate) fn position(&self) -> usize {
        self.at
    }

    pub(crate) fn put(&mut self, bytes: &[u8]) -> Result<(), WireError> {
        let end = self.at + bytes.len();
        let dst = self
            .out
            .get_mut(self.at..end)
            .ok_or(WireError::BufferTooSmall { required: end })?;
        dst.copy_from_slice(bytes);
        self.at = end;
        Ok(())
    }

    pub(crate) fn u8(&mut self, v: u8) -> Result<(), WireError> {
        self.put(&[v])
    }

    pub(crate) fn u16(&mut self, v: u16) -> Result<(), WireError> {
        self.put(&v.to_be_bytes())
    }

    pub(crate) fn u64(&mut self, v: u64) -> Result<(), WireError> {
        self.put(&v.to_be_bytes())
    }

    /// A `u16` length and the bytes; longer input is a caller bug the codecs rule out
    /// by their own bounds, reported as a too-small buffer rather than truncated.
    pub(crate) fn bytes16(&mut self, bytes: &[u8]) -> Result<(), WireError> {
        let n = u16::try_from(bytes.len()).map_err(|_| WireError::BufferTooSmall {
            required: usize::MAX,
        })?;
        self.u16(n)?;
        self.put(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_reports_truncation_instead_of_panicking() {
        let mut r = Reader::new(&[1, 2, 3]);
        assert_eq!(r.u16(), Ok(0x0102));
        assert_eq!(r.u16(), Err(WireError::Truncated));
        assert_eq!(r.take(usize::MAX), Err(WireError::Truncated));
        assert_eq!(r.u8(), Ok(3));
        assert_eq!(r.finish(), Ok(()));
    }

    #[test]
    fn writer_reports_required_size() {
        let mut buf = [0u8; 3];
        let mut w = Writer::new(&mut buf);
        assert_eq!(w.u16(7), Ok(()));
        assert_eq!(w.u16(8), Err(WireError::BufferTooSmall { required: 4 }));
        assert_eq!(w.position(), 2);
        assert_eq!(buf[..2], [0, 7]);
    }
}
