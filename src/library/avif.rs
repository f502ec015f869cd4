//! Pixels to AVIF with ravif (rav1e, pure Rust): the library's backfill of each image's AVIF
//! encoding and the AVIF renditions both come through here.
//!
//! One encode runs on the one thread that asked for it (no rav1e threads, no rayon), so the
//! threads that may encode bound the CPU, and the callers bound the memory: rav1e holds about
//! [`BYTES_PER_PIXEL`] bytes per pixel at its peak (measured, docs/BENCHMARKS.md section 13).
//! Quality and speed were chosen by measurement in the same section (`tests/quality.rs`, scored
//! with SSIMULACRA2): speed 3 saved 1-4% of the bytes for up to half again the time, speed 8 and
//! 10 cost 3% and 20-40% more bytes; and an AVIF at [`quality_for`] a WebP quality scores about
//! what that WebP scores (AVIF 70 for WebP 75: 62-65 on the photo library, in about 0.8 of the
//! bytes).

use anyhow::anyhow;
use rgb::FromSlice;

use super::pixels::Pixels;

/// The AVIF quality (1-100) that looks like lossy WebP at `webp` (measured near WebP's default
/// of 75, and used wherever the operator's WebP quality is).
pub(crate) fn quality_for(webp: u8) -> u8 {
    webp.saturating_sub(5).max(1)
}
/// rav1e's speed preset (1 slowest - 10 fastest).
pub(crate) const SPEED: u8 = 6;
/// Peak memory of an encode, per pixel of the image encoded.
pub(crate) const BYTES_PER_PIXEL: u64 = 40;

/// `pixels` as an AVIF file at `quality` (1-100).
pub(crate) fn encode(pixels: &Pixels, quality: u8) -> anyhow::Result<Vec<u8>> {
    let (width, height) = (pixels.width as usize, pixels.height as usize);
    anyhow::ensure!(width > 0 && height > 0, "cannot encode an empty image as AVIF");
    let encoder = ravif::Encoder::new()
        .with_quality(f32::from(quality.clamp(1, 100)))
        .with_alpha_quality(f32::from(quality.clamp(1, 100)))
        .with_speed(SPEED)
        .with_num_threads(Some(1));
    let encoded = if pixels.alpha {
        encoder.encode_rgba(ravif::Img::new(pixels.data.as_rgba(), width, height))
    } else {
        encoder.encode_rgb(ravif::Img::new(pixels.data.as_rgb(), width, height))
    };
    Ok(encoded.map_err(|e| anyhow!("AVIF encoding failed: {e}"))?.avif_file)
}

/// The settings part of an AVIF cache key: change it and every AVIF is encoded anew.
pub(crate) fn describe(quality: u8) -> String {
    format!("avif-ravif0.13-q{quality}-s{SPEED}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_encoding_is_an_avif_file_of_the_same_size() {
        for alpha in [false, true] {
            let channels = if alpha { 4 } else { 3 };
            let data = (0..40 * 24 * channels).map(|i| (i * 7 % 251) as u8).collect();
            let avif = encode(&Pixels { width: 40, height: 24, alpha, data }, 50).unwrap();
            assert_eq!(&avif[4..12], b"ftypavif");
            let size = imagesize::blob_size(&avif).unwrap();
            assert_eq!((size.width, size.height), (40, 24), "alpha {alpha}");
        }
        assert!(encode(&Pixels { width: 0, height: 3, alpha: false, data: Vec::new() }, 50).is_err());
    }
}
