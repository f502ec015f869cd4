//! HEIC/HEIF (phones) and AVIF input through the system's libheif, built only with the `heif`
//! cargo feature (libheif is a C library that no crate builds from source on Debian 12; the README
//! says how to install it). libheif applies the container's rotation, mirror and crop itself, so
//! the pixels come upright; the colour profile is the `colr` box's ICC, or its nclx code points
//! turned into a profile, for `develop` to convert to sRGB. The primary image's size is checked
//! against the pixel limit before anything is decoded.

use anyhow::{anyhow, bail, Context};
use libheif_rs::{ColorSpace, HeifContext, LibHeif, RgbChroma};
use moxcms::{CicpColorPrimaries, CicpProfile, ColorProfile, MatrixCoefficients, TransferCharacteristics};

use super::develop::Metadata;
use super::pixels::Pixels;

/// The primary image of a HEIF or AVIF file as 8-bit RGB or RGBA, with its colour profile.
pub(crate) fn decode(bytes: &[u8], max_pixels: u64) -> anyhow::Result<(Pixels, Metadata)> {
    let context = HeifContext::read_from_bytes(bytes).map_err(|e| anyhow!("libheif: {e}"))?;
    let handle = context.primary_image_handle().map_err(|e| anyhow!("libheif: {e}"))?;
    let (width, height) = (handle.width(), handle.height());
    let pixels = u64::from(width) * u64::from(height);
    if pixels > max_pixels {
        bail!(
            "it is {width}x{height} = {:.1} megapixels, over the limit of {:.1} (KEIKO_MAX_PIXELS)",
            pixels as f64 / 1e6,
            max_pixels as f64 / 1e6
        );
    }
    let alpha = handle.has_alpha_channel();
    let chroma = if alpha { RgbChroma::Rgba } else { RgbChroma::Rgb };
    // No decoding options: libheif-rs 0.20 frees the options it is given before libheif reads
    // them (its `decode` maps them to a pointer in a closure that drops them). The defaults are
    // what keiko wants: transformations applied, and 8-bit output for the 8-bit chroma asked for.
    let image =
        LibHeif::new().decode(&handle, ColorSpace::Rgb(chroma), None).map_err(|e| anyhow!("libheif: {e}"))?;
    let plane = image.planes().interleaved.context("libheif gave no interleaved plane")?;
    let channels = if alpha { 4 } else { 3 };
    if usize::from(plane.storage_bits_per_pixel) != channels * 8 {
        bail!("libheif gave {} bits a pixel for 8-bit RGB", plane.storage_bits_per_pixel);
    }
    let row = plane.width as usize * channels;
    let mut data = Vec::with_capacity(row * plane.height as usize);
    for y in 0..plane.height as usize {
        data.extend_from_slice(
            plane.data.get(y * plane.stride..y * plane.stride + row).context("short plane")?,
        );
    }
    let icc = match handle.color_profile_raw() {
        Some(raw) => Some(raw.data),
        None => handle.color_profile_nclx().and_then(|nclx| {
            nclx_profile(nclx.color_primaries() as u8, nclx.transfer_characteristics() as u8)
        }),
    };
    let pixels = Pixels { width: plane.width, height: plane.height, alpha, data };
    Ok((pixels, Metadata { icc, orientation: image::metadata::Orientation::NoTransforms }))
}

/// An ICC profile for nclx code points that are not sRGB's (BT.709 primaries with the sRGB or
/// BT.709 curve count as sRGB, as browsers show them), when moxcms can express them.
fn nclx_profile(primaries: u8, transfer: u8) -> Option<Vec<u8>> {
    const BT709: u8 = 1;
    const UNSPECIFIED: u8 = 2;
    const SRGB_CURVES: [u8; 4] = [1, 2, 6, 13];
    if matches!(primaries, BT709 | UNSPECIFIED) && SRGB_CURVES.contains(&transfer) {
        return None;
    }
    let cicp = CicpProfile {
        color_primaries: CicpColorPrimaries::try_from(primaries).ok()?,
        transfer_characteristics: TransferCharacteristics::try_from(transfer).ok()?,
        matrix_coefficients: MatrixCoefficients::Identity,
        full_range: true,
    };
    ColorProfile::new_from_cicp(cicp).encode().ok()
}
