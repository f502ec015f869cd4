//! From decoded pixels to the picture a viewer would show: the embedded colour profile converted
//! to sRGB, then the EXIF orientation applied, so that everything after (the WebP, `/info`, sizes
//! and crops) speaks of the upright sRGB image. Runs once per image in the background encode; the
//! hot path never sees it.
//!
//! Colour management is moxcms's (pure Rust, the profile parsed with its size limits: a hostile
//! profile is at most the file's metadata budget and its tables at moxcms's caps). An image
//! without a profile is taken as sRGB, as browsers take it. A profile that cannot be read or
//! converted is ignored with a warning: the image is served as if it were sRGB, as before.
//! Orientation is the EXIF tag as the image crate reads it; the metadata itself is never sent on.

use image::imageops;
use image::metadata::Orientation;
use image::{ImageBuffer, Rgb, Rgba};
use moxcms::{ColorProfile, DataColorSpace, Layout, TransformOptions};

use super::pixels::Pixels;

/// What a decoder found beside the pixels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Metadata {
    /// The embedded ICC profile, when there is one.
    pub(crate) icc: Option<Vec<u8>>,
    /// How the stored pixels are to be turned to be upright.
    pub(crate) orientation: Orientation,
}

impl Default for Metadata {
    fn default() -> Metadata {
        Metadata { icc: None, orientation: Orientation::NoTransforms }
    }
}

impl Metadata {
    /// The profile, and the orientation from a raw EXIF block (starting at its TIFF header).
    pub(crate) fn with_exif(icc: Option<Vec<u8>>, exif: Option<&[u8]>) -> Metadata {
        let orientation = exif.and_then(Orientation::from_exif_chunk).unwrap_or(Orientation::NoTransforms);
        Metadata { icc, orientation }
    }
}

/// The decoded image as it should be shown, and a warning for the operator when part of its
/// metadata could not be used.
pub(crate) fn develop(pixels: Pixels, metadata: &Metadata) -> (Pixels, Option<String>) {
    let mut warning = None;
    let pixels = match &metadata.icc {
        Some(icc) => match to_srgb(pixels, icc) {
            Ok(converted) => converted,
            Err((unchanged, why)) => {
                warning = Some(format!("its colour profile is ignored ({why}): shown as sRGB"));
                unchanged
            }
        },
        None => pixels,
    };
    (upright(pixels, metadata.orientation), warning)
}

/// 16-bit RGB or RGBA samples (a PNG's or TIFF's) to 8-bit pixels as they are to be shown: the
/// profile is applied before the samples are rounded, so that a wide-gamut 16-bit photo loses no
/// more than one rounding.
pub(crate) fn develop16(
    width: u32,
    height: u32,
    alpha: bool,
    samples: Vec<u16>,
    metadata: &Metadata,
) -> (Pixels, Option<String>) {
    let mut warning = None;
    let samples = match &metadata.icc {
        Some(icc) => match to_srgb16(&samples, alpha, icc) {
            Ok(converted) => converted,
            Err(why) => {
                warning = Some(format!("its colour profile is ignored ({why}): shown as sRGB"));
                samples
            }
        },
        None => samples,
    };
    let data = samples.iter().map(|&v| ((u32::from(v) * 255 + 32_767) / 65_535) as u8).collect();
    (upright(Pixels { width, height, alpha, data }, metadata.orientation), warning)
}

fn to_srgb16(samples: &[u16], alpha: bool, icc: &[u8]) -> Result<Vec<u16>, String> {
    let source = profile(icc)?;
    if source.color_space != DataColorSpace::Rgb {
        return Err(format!("a {:?} profile on an RGB image", source.color_space));
    }
    let layout = if alpha { Layout::Rgba } else { Layout::Rgb };
    let transform = source
        .create_transform_16bit(layout, &ColorProfile::new_srgb(), layout, TransformOptions::default())
        .map_err(|e| format!("moxcms cannot convert from it: {e}"))?;
    let mut out = vec![0; samples.len()];
    transform.transform(samples, &mut out).map_err(|e| format!("moxcms failed to convert: {e}"))?;
    Ok(out)
}

/// Parses an ICC profile with moxcms's limits.
pub(crate) fn profile(icc: &[u8]) -> Result<ColorProfile, String> {
    ColorProfile::new_from_slice(icc).map_err(|e| format!("moxcms cannot read it: {e}"))
}

/// RGB or RGBA in the colour space of `icc` to sRGB; the pixels back unchanged, with the reason,
/// when that cannot be done.
fn to_srgb(mut pixels: Pixels, icc: &[u8]) -> Result<Pixels, (Pixels, String)> {
    let source = match profile(icc) {
        Ok(source) => source,
        Err(why) => return Err((pixels, why)),
    };
    if source.color_space != DataColorSpace::Rgb {
        // A grey or CMYK profile on pixels that reached here as RGB: the decoder expanded them
        // without it, and there is no RGB profile to convert from.
        let why = format!("a {:?} profile on an RGB image", source.color_space);
        return Err((pixels, why));
    }
    let layout = if pixels.alpha { Layout::Rgba } else { Layout::Rgb };
    let srgb = ColorProfile::new_srgb();
    let transform = match source.create_transform_8bit(layout, &srgb, layout, TransformOptions::default()) {
        Ok(transform) => transform,
        Err(e) => return Err((pixels, format!("moxcms cannot convert from it: {e}"))),
    };
    let mut out = vec![0; pixels.data.len()];
    if let Err(e) = transform.transform(&pixels.data, &mut out) {
        return Err((pixels, format!("moxcms failed to convert: {e}")));
    }
    pixels.data = out;
    Ok(pixels)
}

/// CMYK samples (4 bytes a pixel, 0 = no ink) with their CMYK profile to sRGB pixels.
pub(crate) fn cmyk_to_srgb(cmyk: &[u8], width: u32, height: u32, icc: &[u8]) -> Result<Pixels, String> {
    let source = profile(icc)?;
    if source.color_space != DataColorSpace::Cmyk {
        return Err(format!("a {:?} profile on a CMYK image", source.color_space));
    }
    let srgb = ColorProfile::new_srgb();
    let transform = source
        .create_transform_8bit(Layout::Rgba, &srgb, Layout::Rgb, TransformOptions::default())
        .map_err(|e| format!("moxcms cannot convert from it: {e}"))?;
    let mut data = vec![0; cmyk.len() / 4 * 3];
    transform.transform(cmyk, &mut data).map_err(|e| format!("moxcms failed to convert: {e}"))?;
    Ok(Pixels { width, height, alpha: false, data })
}

/// The pixels turned and mirrored as the EXIF orientation says.
fn upright(pixels: Pixels, orientation: Orientation) -> Pixels {
    if orientation == Orientation::NoTransforms {
        return pixels;
    }
    fn turn<P: image::Pixel<Subpixel = u8> + 'static>(
        image: ImageBuffer<P, Vec<u8>>,
        orientation: Orientation,
    ) -> ImageBuffer<P, Vec<u8>> {
        match orientation {
            Orientation::NoTransforms => image,
            Orientation::Rotate90 => imageops::rotate90(&image),
            Orientation::Rotate180 => imageops::rotate180(&image),
            Orientation::Rotate270 => imageops::rotate270(&image),
            Orientation::FlipHorizontal => imageops::flip_horizontal(&image),
            Orientation::FlipVertical => imageops::flip_vertical(&image),
            Orientation::Rotate90FlipH => imageops::flip_horizontal(&imageops::rotate90(&image)),
            Orientation::Rotate270FlipH => imageops::flip_horizontal(&imageops::rotate270(&image)),
        }
    }
    let Pixels { width, height, alpha, data } = pixels;
    let (width, height, data) = if alpha {
        let image = ImageBuffer::<Rgba<u8>, _>::from_raw(width, height, data).expect("RGBA of its size");
        let turned = turn(image, orientation);
        (turned.width(), turned.height(), turned.into_raw())
    } else {
        let image = ImageBuffer::<Rgb<u8>, _>::from_raw(width, height, data).expect("RGB of its size");
        let turned = turn(image, orientation);
        (turned.width(), turned.height(), turned.into_raw())
    };
    Pixels { width, height, alpha, data }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A little-endian EXIF block holding only an orientation tag.
    pub(crate) fn exif_with_orientation(value: u16) -> Vec<u8> {
        let mut exif = b"II*\0\x08\0\0\0\x01\0".to_vec();
        exif.extend([0x12, 0x01, 3, 0, 1, 0, 0, 0]);
        exif.extend(value.to_le_bytes());
        exif.extend([0, 0, 0, 0, 0, 0]);
        exif
    }

    /// A 3x2 RGB image whose pixels are their own coordinates: (x, y, 0).
    fn coordinates() -> Pixels {
        let data = (0..2u8).flat_map(|y| (0..3u8).flat_map(move |x| [x, y, 0])).collect();
        Pixels { width: 3, height: 2, alpha: false, data }
    }

    fn at(p: &Pixels, x: u32, y: u32) -> (u8, u8) {
        let i = ((y * p.width + x) * 3) as usize;
        (p.data[i], p.data[i + 1])
    }

    #[test]
    fn each_orientation_turns_the_stored_image_upright() {
        // Where the stored pixel (0, 0) ends up, and the upright size, for tags 1-8.
        let expected = [(1, (0, 0), (3, 2)), (2, (2, 0), (3, 2)), (3, (2, 1), (3, 2)), (4, (0, 1), (3, 2))];
        let turned = [(5, (0, 0), (2, 3)), (6, (1, 0), (2, 3)), (7, (1, 2), (2, 3)), (8, (0, 2), (2, 3))];
        for (tag, (x, y), (w, h)) in expected.into_iter().chain(turned) {
            let metadata = Metadata::with_exif(None, Some(&exif_with_orientation(tag)));
            let (p, warning) = develop(coordinates(), &metadata);
            assert!(warning.is_none());
            assert_eq!((p.width, p.height), (w, h), "orientation {tag}: size");
            assert_eq!(at(&p, x, y), (0, 0), "orientation {tag}: where the stored top-left went");
        }
    }

    #[test]
    fn colours_stored_in_display_p3_and_adobe_rgb_come_back_as_their_srgb_originals() {
        let original = vec![200, 100, 50, 30, 160, 220, 128, 128, 128];
        let srgb = ColorProfile::new_srgb();
        for (name, profile) in
            [("Display P3", ColorProfile::new_display_p3()), ("Adobe RGB", ColorProfile::new_adobe_rgb())]
        {
            let to_profile = srgb
                .create_transform_8bit(Layout::Rgb, &profile, Layout::Rgb, TransformOptions::default())
                .unwrap();
            let mut stored = vec![0; original.len()];
            to_profile.transform(&original, &mut stored).unwrap();
            assert_ne!(stored, original, "{name}: the stored numbers differ from sRGB's");
            let pixels = Pixels { width: 3, height: 1, alpha: false, data: stored };
            let (shown, warning) =
                develop(pixels, &Metadata::with_exif(Some(profile.encode().unwrap()), None));
            assert!(warning.is_none(), "{name}: {warning:?}");
            let off = shown.data.iter().zip(&original).map(|(a, b)| a.abs_diff(*b)).max().unwrap();
            // Two 8-bit quantisations: dark channels land on coarse steps of the wider space.
            assert!(off <= 3, "{name}: {:?} for {original:?}", shown.data);
        }
    }

    #[test]
    fn a_profile_that_cannot_be_read_is_ignored_with_a_warning() {
        let (p, warning) =
            develop(coordinates(), &Metadata::with_exif(Some(b"not a profile".to_vec()), None));
        assert_eq!(p, coordinates());
        assert!(warning.unwrap().contains("colour profile is ignored"));
    }
}
