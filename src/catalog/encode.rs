//! Pixels to lossless WebP with libwebp.
//!
//! `exact` keeps the colour of fully transparent pixels, which lossless mode would otherwise
//! throw away; `encode_advanced` is used because the webp crate's simpler calls unwrap libwebp's
//! errors. Method and quality only trade startup time for size (the pixels are the same either
//! way); the values below were picked by measuring the bundled assets (see README).

use anyhow::anyhow;
use webp::{Encoder, PixelLayout, WebPConfig};

use super::decode::Pixels;

/// libwebp's effort knobs for lossless: method 0-6 and quality 0-100.
const METHOD: i32 = 4;
const QUALITY: f32 = 75.0;

pub fn encode_lossless(pixels: &Pixels) -> anyhow::Result<Vec<u8>> {
    let mut config = WebPConfig::new().map_err(|()| anyhow!("libwebp refused its default configuration"))?;
    config.lossless = 1;
    config.exact = 1;
    config.method = METHOD;
    config.quality = QUALITY;
    let layout = if pixels.alpha { PixelLayout::Rgba } else { PixelLayout::Rgb };
    let webp = Encoder::new(&pixels.data, layout, pixels.width, pixels.height)
        .encode_advanced(&config)
        .map_err(|e| anyhow!("WebP encoding failed: {e:?}"))?;
    Ok(webp.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lossless_keeps_every_pixel_including_transparent_colour() {
        let data: Vec<u8> =
            (0..16u8).flat_map(|i| [i * 16, 255 - i * 16, i, if i % 3 == 0 { 0 } else { 128 }]).collect();
        let pixels = Pixels { width: 4, height: 4, alpha: true, data: data.clone() };
        let webp = encode_lossless(&pixels).unwrap();
        let back = webp::Decoder::new(&webp).decode().unwrap();
        assert_eq!(&*back, &data[..]);
    }

    #[test]
    fn rgb_stays_rgb() {
        let data: Vec<u8> = (0..27u8).collect();
        let webp =
            encode_lossless(&Pixels { width: 3, height: 3, alpha: false, data: data.clone() }).unwrap();
        let back = webp::Decoder::new(&webp).decode().unwrap();
        assert!(!back.is_alpha());
        assert_eq!(&*back, &data[..]);
    }

    #[test]
    fn impossible_dimensions_are_an_error_not_a_panic() {
        let wide = Pixels { width: 20_000, height: 1, alpha: false, data: vec![0; 60_000] };
        assert!(encode_lossless(&wide).is_err());
    }
}
