//! Pixels to WebP with libwebp, as the operator's settings say: lossless (exact pixels), lossy at a
//! quality, or chosen by the source's format; optionally downscaled first.
//!
//! Lossless runs with `exact` on, which keeps the colour of fully transparent pixels, and with
//! libwebp's default effort (method 4, quality 75): it gives the same bytes as `cwebp -lossless`,
//! and the README records why the other efforts were not worth it. Downscaling uses
//! fast_image_resize (SIMD, Lanczos3, alpha premultiplied while filtering). `encode_advanced` is
//! used because the webp crate's simpler calls unwrap libwebp's errors.

use std::fmt;
use std::str::FromStr;

use anyhow::anyhow;
use fast_image_resize::images::Image as ResizeImage;
use fast_image_resize::{PixelType, ResizeAlg, ResizeOptions, Resizer};
use webp::{Encoder, PixelLayout, WebPConfig};

use super::decode::{Format, Pixels};

/// libwebp's effort knobs for lossless: method 0-6 and quality 0-100.
const LOSSLESS_METHOD: i32 = 4;
const LOSSLESS_EFFORT: f32 = 75.0;
/// The quality `auto` uses for JPEG and lossy WebP sources (cwebp's default).
pub(crate) const AUTO_QUALITY: u8 = 75;

/// `KEIKO_WEBP`: how sources are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebpMode {
    Lossless,
    Lossy(u8),
    /// Lossless for PNG, GIF and lossless WebP; lossy at [`AUTO_QUALITY`] for JPEG and lossy WebP.
    Auto,
}

impl FromStr for WebpMode {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<WebpMode> {
        match s {
            "lossless" => Ok(WebpMode::Lossless),
            "auto" => Ok(WebpMode::Auto),
            _ => match s.strip_prefix("lossy:").map(str::parse::<u8>) {
                Some(Ok(q)) if q <= 100 => Ok(WebpMode::Lossy(q)),
                _ => Err(anyhow::anyhow!(
                    "'{s}' is not lossless, auto or lossy:Q with a quality Q from 0 to 100"
                )),
            },
        }
    }
}

impl fmt::Display for WebpMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WebpMode::Lossless => f.write_str("lossless"),
            WebpMode::Lossy(q) => write!(f, "lossy:{q}"),
            WebpMode::Auto => f.write_str("auto"),
        }
    }
}

/// How one image is encoded: what [`Settings::for_source`] decides for a given source format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encoding {
    /// None for lossless, the quality for lossy.
    pub(crate) quality: Option<u8>,
    /// Longest side in pixels after downscaling; 0 keeps the size.
    pub(crate) max_side: u32,
    /// For formats that animate (GIF, WebP): how much animation is kept.
    pub(crate) animation: Option<Budget>,
}

impl fmt::Display for Encoding {
    /// The form that goes into cache keys: change it and every image is encoded anew.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.quality {
            None => write!(f, "webp-lossless-m{LOSSLESS_METHOD}-q{LOSSLESS_EFFORT}-exact")?,
            Some(q) => write!(f, "webp-lossy-q{q}")?,
        }
        // Since the EXIF orientation is applied and colour profiles converted (`develop`), the
        // same source bytes give another picture than the encodings made before.
        write!(f, ";max-side={};upright-srgb", self.max_side)?;
        match self.animation {
            Some(budget) => write!(f, ";animation={}f{}px", budget.frames, budget.pixels),
            None => Ok(()),
        }
    }
}

/// `--animation-frames` and `--animation-megapixels`: how much animation one image may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub(crate) frames: u32,
    /// Pixels summed over every frame's canvas.
    pub(crate) pixels: u64,
}

/// A budget for unit tests elsewhere.
#[cfg(test)]
pub(crate) const TEST_BUDGET: Budget = Budget { frames: 100, pixels: 10_000_000 };

impl Budget {
    /// Whether `frames` canvases of `width` x `height` fit.
    pub(crate) fn allows(&self, frames: u64, width: u32, height: u32) -> bool {
        frames <= u64::from(self.frames) && frames * u64::from(width) * u64::from(height) <= self.pixels
    }

    pub(crate) fn describe(&self) -> String {
        format!(
            "{} frames and {} megapixels over all frames (KEIKO_ANIMATION_FRAMES, KEIKO_ANIMATION_MEGAPIXELS)",
            self.frames,
            self.pixels / 1_000_000
        )
    }
}

/// The operator's encoding settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    pub(crate) mode: WebpMode,
    pub(crate) max_side: u32,
    pub(crate) animation: Budget,
}

impl Settings {
    pub fn for_source(&self, format: Format) -> Encoding {
        let quality = match self.mode {
            WebpMode::Lossless => None,
            WebpMode::Lossy(q) => Some(q),
            WebpMode::Auto if format.is_lossless() => None,
            WebpMode::Auto => Some(AUTO_QUALITY),
        };
        let animation = matches!(format, Format::Gif | Format::WebpLossless | Format::WebpLossy)
            .then_some(self.animation);
        Encoding { quality, max_side: self.max_side, animation }
    }
}

pub fn encode(pixels: &Pixels, encoding: Encoding) -> anyhow::Result<Vec<u8>> {
    let scaled;
    let pixels = match downscaled(pixels, encoding.max_side)? {
        Some(smaller) => {
            scaled = smaller;
            &scaled
        }
        None => pixels,
    };
    let config = webp_config(encoding.quality)?;
    let layout = if pixels.alpha { PixelLayout::Rgba } else { PixelLayout::Rgb };
    let webp = Encoder::new(&pixels.data, layout, pixels.width, pixels.height)
        .encode_advanced(&config)
        .map_err(|e| anyhow!("WebP encoding failed: {e:?}"))?;
    Ok(webp.to_vec())
}

/// libwebp's settings for lossless (`None`) or lossy at a quality, for stills and animations.
pub(crate) fn webp_config(quality: Option<u8>) -> anyhow::Result<WebPConfig> {
    let mut config = WebPConfig::new().map_err(|()| anyhow!("libwebp refused its default configuration"))?;
    match quality {
        None => {
            config.lossless = 1;
            config.exact = 1;
            config.method = LOSSLESS_METHOD;
            config.quality = LOSSLESS_EFFORT;
        }
        Some(q) => {
            config.lossless = 0;
            config.quality = f32::from(q);
        }
    }
    Ok(config)
}

/// The longest side a WebP can have.
pub(crate) const WEBP_MAX_SIDE: u32 = 16_383;

/// `pixels` scaled so that the longer side is `max_side` (or WebP's own limit, when that is
/// smaller or `max_side` is 0), or None when it already fits. An image within the pixel limit can
/// still be too long for WebP (say 20,000 x 100): it is served smaller rather than not at all.
pub(crate) fn downscaled(pixels: &Pixels, max_side: u32) -> anyhow::Result<Option<Pixels>> {
    let longer = pixels.width.max(pixels.height);
    let max_side = if max_side == 0 { WEBP_MAX_SIDE } else { max_side.min(WEBP_MAX_SIDE) };
    if longer <= max_side {
        return Ok(None);
    }
    let scale = |side: u32| ((u64::from(side) * u64::from(max_side) / u64::from(longer)) as u32).max(1);
    let (width, height) = (scale(pixels.width), scale(pixels.height));
    let pixel_type = if pixels.alpha { PixelType::U8x4 } else { PixelType::U8x3 };
    let source =
        fast_image_resize::images::ImageRef::new(pixels.width, pixels.height, &pixels.data, pixel_type)
            .map_err(|e| anyhow!("cannot downscale: {e}"))?;
    let mut target = ResizeImage::new(width, height, pixel_type);
    let options =
        ResizeOptions::new().resize_alg(ResizeAlg::Convolution(fast_image_resize::FilterType::Lanczos3));
    Resizer::new().resize(&source, &mut target, &options).map_err(|e| anyhow!("cannot downscale: {e}"))?;
    Ok(Some(Pixels { width, height, alpha: pixels.alpha, data: target.into_vec() }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_image_too_long_for_webp_is_served_smaller() {
        let pixels = Pixels { width: 20_000, height: 2, alpha: false, data: vec![90; 20_000 * 2 * 3] };
        let webp = encode(&pixels, Encoding { quality: None, max_side: 0, animation: None }).unwrap();
        let decoded = webp::Decoder::new(&webp).decode().unwrap();
        assert_eq!((decoded.width(), decoded.height()), (WEBP_MAX_SIDE, 1));
    }

    const LOSSLESS: Encoding = Encoding { quality: None, max_side: 0, animation: None };

    #[test]
    fn lossless_keeps_every_pixel_including_transparent_colour() {
        let data: Vec<u8> =
            (0..16u8).flat_map(|i| [i * 16, 255 - i * 16, i, if i % 3 == 0 { 0 } else { 128 }]).collect();
        let pixels = Pixels { width: 4, height: 4, alpha: true, data: data.clone() };
        let webp = encode(&pixels, LOSSLESS).unwrap();
        let back = webp::Decoder::new(&webp).decode().unwrap();
        assert_eq!(&*back, &data[..]);
    }

    #[test]
    fn rgb_stays_rgb() {
        let data: Vec<u8> = (0..27u8).collect();
        let webp =
            encode(&Pixels { width: 3, height: 3, alpha: false, data: data.clone() }, LOSSLESS).unwrap();
        let back = webp::Decoder::new(&webp).decode().unwrap();
        assert!(!back.is_alpha());
        assert_eq!(&*back, &data[..]);
    }

    #[test]
    fn impossible_dimensions_are_an_error_not_a_panic() {
        let empty = Pixels { width: 0, height: 5, alpha: false, data: Vec::new() };
        assert!(encode(&empty, LOSSLESS).is_err());
    }

    #[test]
    fn lossy_is_smaller_and_max_side_downscales_keeping_the_aspect() {
        // A photo-like gradient with noise, which lossy WebP compresses far better than lossless.
        let mut rng = fastrand::Rng::with_seed(7);
        let data: Vec<u8> = (0..64 * 48u32)
            .flat_map(|i| {
                [(i % 64) as u8 * 3, (i / 64) as u8 * 4, 90].map(|c| c.saturating_add(rng.u8(..24)))
            })
            .collect();
        let pixels = Pixels { width: 64, height: 48, alpha: false, data };
        let lossless = encode(&pixels, LOSSLESS).unwrap();
        let lossy = encode(&pixels, Encoding { quality: Some(50), max_side: 0, animation: None }).unwrap();
        assert!(lossy.len() < lossless.len(), "{} vs {}", lossy.len(), lossless.len());
        let small = encode(&pixels, Encoding { quality: None, max_side: 16, animation: None }).unwrap();
        let back = webp::Decoder::new(&small).decode().unwrap();
        assert_eq!((back.width(), back.height()), (16, 12));
    }

    #[test]
    fn modes_parse_and_auto_follows_the_source() {
        assert_eq!("lossless".parse::<WebpMode>().unwrap(), WebpMode::Lossless);
        assert_eq!("lossy:80".parse::<WebpMode>().unwrap(), WebpMode::Lossy(80));
        assert_eq!("auto".parse::<WebpMode>().unwrap(), WebpMode::Auto);
        for bad in ["", "lossy", "lossy:101", "lossy:-1", "Lossless", "lossy:q"] {
            assert!(bad.parse::<WebpMode>().is_err(), "{bad:?}");
        }
        let auto = Settings { mode: WebpMode::Auto, max_side: 0, animation: TEST_BUDGET };
        assert_eq!(auto.for_source(Format::Png).quality, None);
        assert_eq!(auto.for_source(Format::WebpLossless).quality, None);
        assert_eq!(auto.for_source(Format::Jpeg).quality, Some(AUTO_QUALITY));
        assert_ne!(auto.for_source(Format::Png).to_string(), auto.for_source(Format::Jpeg).to_string());
    }
}
