//! One encoded body (WebP or AVIF) as it is served: an open file, mapped read-only.
//!
//! The file is normally an entry of the on-disk cache (the library writes it once, atomically,
//! and never changes it afterwards), so the body lives in the page cache: small responses are
//! written from the mapping with writev, large ones that end their connection are handed to the
//! kernel with sendfile(2) from the descriptor, and memory holds only what is hot. When the cache
//! directory cannot be written, the body goes into a sealed memfd instead, which serves the same
//! way from memory.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::fs::FileExt;

use anyhow::Context;
use memmap2::{Mmap, MmapOptions};

pub(crate) struct Body {
    file: File,
    map: Mmap,
    /// 128 bits of BLAKE3 of the bytes: what ETags are made of.
    digest: u128,
    width: u32,
    height: u32,
    frames: std::sync::OnceLock<u32>,
}

/// 128 bits of BLAKE3 of `bytes`.
pub(crate) fn digest(bytes: &[u8]) -> u128 {
    let hash = blake3::hash(bytes);
    u128::from_le_bytes(hash.as_bytes()[..16].try_into().expect("BLAKE3 hashes are 32 bytes"))
}

impl Body {
    /// Maps `file` of `len` bytes, which must hold a whole WebP image (see [`is_whole_webp`]) or
    /// a whole AVIF image (see [`is_whole_avif`]) and never change. `digest` is the bytes' [`digest`] when it is known (from the manifest);
    /// otherwise the bytes are read to compute it.
    /// The check reads the header with pread, not through the mapping: touching a mapped page
    /// would map its whole (possibly multi-megabyte) folio, and a warm start must not do that
    /// for every image.
    pub(crate) fn map(file: File, len: usize, digest: Option<u128>) -> anyhow::Result<Body> {
        // A WebP's size is in its first 30 bytes; an AVIF's in its `meta` box, which keiko's
        // encoder writes before the image data.
        let mut header = [0u8; 4096];
        let read = file.read_at(&mut header[..32], 0).context("cannot read the encoded image")?;
        let webp = &header[..read.min(4)] == b"RIFF";
        let read = if webp {
            read
        } else {
            file.read_at(&mut header, 0).context("cannot read the encoded image")?
        };
        let whole = if webp { is_whole_webp(&header[..read], len) } else { is_whole_avif(&file, len) };
        anyhow::ensure!(whole, "the encoded image is not a whole WebP or AVIF file");
        let size = imagesize::blob_size(&header[..read])
            .map_err(|e| anyhow::anyhow!("the encoded image's header cannot be read: {e}"))?;
        // SAFETY: cache files are written once under a temporary name and renamed into place;
        // nothing writes to them afterwards (README: the cache directory is keiko's alone), and
        // memfds are sealed, so the mapping does not change under the slices handed out.
        let map =
            unsafe { MmapOptions::new().len(len).map(&file) }.context("cannot map the encoded image")?;
        let digest = digest.unwrap_or_else(|| self::digest(&map));
        Ok(Body {
            file,
            map,
            digest,
            width: size.width as u32,
            height: size.height as u32,
            frames: std::sync::OnceLock::new(),
        })
    }

    /// `bytes` in a sealed anonymous memory file, for when the cache directory is not writable.
    pub(crate) fn in_memory(bytes: &[u8]) -> anyhow::Result<Body> {
        // SAFETY: a plain syscall with a NUL-terminated name; the fd is checked before use.
        let fd = unsafe {
            libc::memfd_create(c"keiko-body".as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING)
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error()).context("memfd_create");
        }
        // SAFETY: fd is a new descriptor that nothing else owns.
        let mut file = unsafe { File::from_raw_fd(fd) };
        file.write_all(bytes).context("cannot hold the encoded image in memory")?;
        let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE | libc::F_SEAL_SEAL;
        // SAFETY: plain fcntl on a descriptor this function owns.
        if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, seals) } < 0 {
            return Err(std::io::Error::last_os_error()).context("sealing the encoded image");
        }
        Body::map(file, bytes.len(), Some(digest(bytes)))
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.map
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    pub(crate) fn digest(&self) -> u128 {
        self.digest
    }

    /// Frames in the encoded image: 1 for a still, more for an animation. Read from its chunk
    /// headers the first time `/info` or `/v2/list` asks, not at load (a warm start must not touch
    /// every mapped body), and kept.
    pub(crate) fn frames(&self) -> u32 {
        *self.frames.get_or_init(|| crate::library::animation::frame_count(&self.map))
    }

    /// The image's width and height in pixels, from its header.
    pub(crate) fn dimensions(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    /// The descriptor, for sendfile(2); the body starts at offset 0.
    pub(crate) fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

/// Whether a file of `len` bytes starting with `header` is a complete WebP file: a RIFF header
/// whose size matches the length exactly and a first chunk that WebP defines. This catches a truncated or overwritten cache file
/// without reading more than its first bytes.
fn is_whole_webp(header: &[u8], len: usize) -> bool {
    len >= 20
        && header.len() >= 16
        && &header[..4] == b"RIFF"
        && u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as usize + 8 == len
        && &header[8..12] == b"WEBP"
        && matches!(&header[12..16], b"VP8 " | b"VP8L" | b"VP8X")
}

/// Whether `file` of `len` bytes is a complete AVIF file as keiko's encoder writes it: an `ftyp`
/// box naming the `avif` brand first, then top-level boxes whose sizes add up to the length
/// exactly (a handful of small reads, never the image data).
fn is_whole_avif(file: &File, len: usize) -> bool {
    let mut at = 0u64;
    let mut boxes = 0;
    while at < len as u64 {
        let mut head = [0u8; 16];
        let Ok(read) = file.read_at(&mut head, at) else { return false };
        if read < 8 || boxes > 16 {
            return false;
        }
        if boxes == 0 && (&head[4..8] != b"ftyp" || &head[8..12] != b"avif") {
            return false;
        }
        let size = match u32::from_be_bytes([head[0], head[1], head[2], head[3]]) {
            0 => len as u64 - at,
            1 if read == 16 => u64::from_be_bytes(head[8..16].try_into().expect("eight bytes")),
            size => u64::from(size),
        };
        if size < 8 {
            return false;
        }
        at += size;
        boxes += 1;
    }
    at == len as u64 && boxes > 1
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(crate) fn tiny_webp() -> Vec<u8> {
        let mut config = webp::WebPConfig::new().unwrap();
        config.lossless = 1;
        webp::Encoder::new(&[1, 2, 3, 4, 5, 6], webp::PixelLayout::Rgb, 2, 1)
            .encode_advanced(&config)
            .unwrap()
            .to_vec()
    }

    #[test]
    fn a_body_in_memory_serves_from_the_mapping_and_the_descriptor() {
        let webp = tiny_webp();
        let body = Body::in_memory(&webp).unwrap();
        assert_eq!(body.bytes(), &webp[..]);
        assert_eq!((body.dimensions(), body.digest()), ((2, 1), digest(&webp)));
        let mut buf = vec![0u8; webp.len()];
        // SAFETY: reads into a local buffer of the given size.
        let n = unsafe { libc::pread(body.fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        assert_eq!(n as usize, webp.len());
        assert_eq!(buf, webp);
        // SAFETY: a write attempt on a descriptor the body owns; the seals must refuse it.
        assert_eq!(unsafe { libc::pwrite(body.fd(), b"x".as_ptr().cast(), 1, 0) }, -1);
    }

    #[test]
    fn truncated_padded_and_foreign_files_are_not_whole_webp() {
        let webp = tiny_webp();
        let whole = |b: &[u8]| is_whole_webp(b, b.len());
        assert!(whole(&webp));
        assert!(!whole(&webp[..webp.len() - 1]), "truncated");
        let mut padded = webp.clone();
        padded.push(0);
        assert!(!whole(&padded), "longer than its header says");
        let mut renamed = webp.clone();
        renamed[12..16].copy_from_slice(b"JUNK");
        assert!(!whole(&renamed), "no WebP chunk");
        assert!(!whole(b""));
        assert!(Body::in_memory(&webp[..10]).is_err());
    }
}
