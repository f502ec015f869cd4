//! Pixels to baseline JPEG with jpeg-encoder (pure Rust), for clients that take neither WebP nor
//! AVIF. A JPEG has no alpha: transparent pixels are laid on white first.

use anyhow::anyhow;
use jpeg_encoder::{ColorType, Encoder};

use super::pixels::Pixels;

/// The quality (1-100) when none is asked for: libjpeg's own default is 75; photos served to old
/// clients look better a little higher, for about a third more bytes.
pub(crate) const QUALITY: u8 = 80;

/// `pixels` as a JPEG file at `quality` (1-100).
pub(crate) fn encode(pixels: &Pixels, quality: u8) -> anyhow::Result<Vec<u8>> {
    let (width, height) = (
        u16::try_from(pixels.width).map_err(|_| anyhow!("too wide for JPEG"))?,
        u16::try_from(pixels.height).map_err(|_| anyhow!("too high for JPEG"))?,
    );
    let flattened;
    let rgb = if pixels.alpha {
        flattened = on_white(&pixels.data);
        &flattened
    } else {
        &pixels.data
    };
    let mut out = Vec::with_capacity(rgb.len() / 8);
    Encoder::new(&mut out, quality.clamp(1, 100))
        .encode(rgb, width, height, ColorType::Rgb)
        .map_err(|e| anyhow!("JPEG encoding failed: {e}"))?;
    Ok(out)
}

/// RGBA laid over white, as RGB.
fn on_white(rgba: &[u8]) -> Vec<u8> {
    rgba.chunks_exact(4)
        .flat_map(|px| {
            let a = u32::from(px[3]);
            [0, 1, 2].map(|c| ((u32::from(px[c]) * a + 255 * (255 - a) + 127) / 255) as u8)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transparency_becomes_white_and_the_size_is_kept() {
        let pixels = Pixels { width: 16, height: 8, alpha: true, data: [200, 10, 10, 0].repeat(128) };
        let jpeg = encode(&pixels, 90).unwrap();
        assert_eq!(&jpeg[..2], &[0xFF, 0xD8]);
        let size = imagesize::blob_size(&jpeg).unwrap();
        assert_eq!((size.width, size.height), (16, 8));
        assert_eq!(on_white(&[0, 0, 0, 0, 10, 20, 30, 255]), [255, 255, 255, 10, 20, 30]);
    }
}
