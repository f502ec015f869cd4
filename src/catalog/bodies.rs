//! Every WebP body of the catalogue in one sealed memfd, mapped read-only.
//!
//! The same memory serves both ways of sending a body: small ones are written from the mapping
//! with writev, large ones are handed to the kernel with sendfile(2) from the memfd, which puts
//! references to these pages into the socket instead of copying the bytes (what nginx does with
//! files). Sealing makes the contents immutable for as long as the process runs.

use std::fs::File;
use std::io::Write;
use std::ops::Range;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};

use anyhow::Context;
use memmap2::Mmap;

pub struct Bodies {
    file: File,
    /// None when every body is empty (a zero-length file cannot be mapped).
    map: Option<Mmap>,
}

impl Bodies {
    /// Stores `bodies` one after the other; returns the store and each body's byte range in it.
    pub fn new<'a>(
        bodies: impl IntoIterator<Item = &'a [u8]>,
    ) -> anyhow::Result<(Bodies, Vec<Range<usize>>)> {
        // SAFETY: a plain syscall with a NUL-terminated name; the fd is checked before use.
        let fd = unsafe {
            libc::memfd_create(c"keiko-bodies".as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING)
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error()).context("memfd_create");
        }
        // SAFETY: fd is a new descriptor that nothing else owns.
        let mut file = unsafe { File::from_raw_fd(fd) };
        let mut ranges = Vec::new();
        let mut at = 0;
        for body in bodies {
            file.write_all(body).context("cannot write the image cache")?;
            ranges.push(at..at + body.len());
            at += body.len();
        }
        let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE | libc::F_SEAL_SEAL;
        // SAFETY: plain fcntl on a descriptor this function owns.
        if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, seals) } < 0 {
            return Err(std::io::Error::last_os_error()).context("sealing the image cache");
        }
        // SAFETY: the memfd is sealed against writes and size changes, so the mapping cannot change
        // under the slices handed out.
        let map = if at == 0 {
            None
        } else {
            Some(unsafe { Mmap::map(&file) }.context("mapping the image cache")?)
        };
        Ok((Bodies { file, map }, ranges))
    }

    pub fn get(&self, range: Range<usize>) -> &[u8] {
        self.map.as_deref().map_or(&[], |m| &m[range])
    }

    /// The memfd, for sendfile(2); bodies sit at the offsets of their ranges.
    pub fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_come_back_from_the_mapping_and_the_file() {
        let (bodies, ranges) = Bodies::new([&b"first"[..], b"", b"third!"]).unwrap();
        assert_eq!(ranges, [0..5, 5..5, 5..11]);
        assert_eq!(bodies.get(ranges[0].clone()), b"first");
        assert_eq!(bodies.get(ranges[1].clone()), b"");
        assert_eq!(bodies.get(ranges[2].clone()), b"third!");
        let mut buf = [0u8; 6];
        // SAFETY: reads into a local buffer of the given size.
        let n = unsafe { libc::pread(bodies.fd(), buf.as_mut_ptr().cast(), 6, 5) };
        assert_eq!((n, &buf), (6, b"third!"));
    }

    #[test]
    fn the_store_is_sealed_against_changes() {
        let (bodies, _) = Bodies::new([&b"immutable"[..]]).unwrap();
        // SAFETY: a write attempt on a descriptor the store owns; it must fail.
        let n = unsafe { libc::pwrite(bodies.fd(), b"x".as_ptr().cast(), 1, 0) };
        assert_eq!(n, -1);
        assert_eq!(bodies.get(0..9), b"immutable");
    }

    #[test]
    fn an_all_empty_store_works() {
        let (bodies, ranges) = Bodies::new([&b""[..]]).unwrap();
        assert_eq!(bodies.get(ranges[0].clone()), b"");
    }
}
