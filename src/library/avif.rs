//! Pixels to AVIF with rav1e (pure Rust) and avif-serialize: the library's backfill of each
//! image's AVIF encoding and the AVIF renditions both come through here.
//!
//! Why rav1e directly and not through ravif: ravif always encodes 4:4:4 chroma and turns rav1e's
//! CDEF and loop-restoration filters off above low quality. Measured at equal SSIMULACRA2
//! (`tests/quality.rs`, docs/BENCHMARKS.md section 13), rav1e's own speed preset at 4:2:0, 10 bits,
//! needs 0.59 of WebP's bytes at score 65 on the photo library, where ravif needed 0.81, and 0.79
//! on real photographs (ravif 0.81): fewer bytes is what AVIF is for here.
//!
//! One encode runs on the one thread that asked for it (no rav1e threads, no rayon), so the
//! threads that may encode bound the CPU, and the callers bound the memory, counting
//! [`BYTES_PER_PIXEL`] bytes per pixel for an encode (measured in the same section: a whole keiko
//! process peaked at 26 bytes per pixel encoding a 16-megapixel photo). Transparency is a second,
//! monochrome AV1 image, as the AVIF format has it.

use anyhow::anyhow;
use rav1e::prelude::*;

use super::encode::{Encoding, AUTO_QUALITY};
use super::pixels::Pixels;

/// The AVIF quality (1-100) that looks like an image's WebP `encoding`: the same number, measured
/// from quality 40 to 90 on photos (docs/BENCHMARKS.md section 13); `auto`'s for a lossless WebP.
pub(crate) fn quality_for(encoding: &Encoding) -> u8 {
    encoding.quality.unwrap_or(AUTO_QUALITY).clamp(1, 100)
}
/// rav1e's speed preset (1 slowest - 10 fastest).
pub const SPEED: u8 = 6;
/// Peak memory of an encode, per pixel of the image encoded, with a margin over the measured 26.
pub(crate) const BYTES_PER_PIXEL: u64 = 40;
/// Bits per sample inside the AV1 images: 10 keeps 8-bit sources' gradients free of banding.
const DEPTH: usize = 10;
const MAX_SAMPLE: f32 = ((1 << DEPTH) - 1) as f32;
/// BT.601 luma weights of red and blue (green is the rest): what the `colr` box declares and
/// what a browser assumes without one.
const KR: f32 = 0.299;
const KB: f32 = 0.114;

/// `pixels` as an AVIF file at `quality` (1-100).
pub(crate) fn encode(pixels: &Pixels, quality: u8) -> anyhow::Result<Vec<u8>> {
    encode_at(pixels, quality, SPEED)
}

/// [`encode`] at another rav1e speed preset (1-10), for `tests/quality.rs` to choose [`SPEED`] by.
pub fn encode_at(pixels: &Pixels, quality: u8, speed: u8) -> anyhow::Result<Vec<u8>> {
    let (width, height) = (pixels.width as usize, pixels.height as usize);
    anyhow::ensure!(width > 0 && height > 0, "cannot encode an empty image as AVIF");
    let channels = if pixels.alpha { 4 } else { 3 };
    anyhow::ensure!(pixels.data.len() == width * height * channels, "AVIF: pixel data of the wrong length");
    let quantizer = quantizer(quality.clamp(1, 100));
    let colour = encode_av1(width, height, quantizer, speed, ChromaSampling::Cs420, |frame| {
        fill_ycbcr_420(&pixels.data, width, height, channels, frame)
    })?;
    let alpha = if pixels.alpha {
        Some(encode_av1(width, height, quantizer, speed, ChromaSampling::Cs400, |frame| {
            let samples = pixels.data.chunks_exact(4).map(|p| p[3]);
            fill_plane(&mut frame.planes[0], width, samples.map(|a| to_sample(f32::from(a) / 255.0)));
        })?)
    } else {
        None
    };
    let mut file = avif_serialize::Aviffy::new();
    file.set_seq_profile(0)
        .set_chroma_subsampling((true, true))
        .set_matrix_coefficients(avif_serialize::constants::MatrixCoefficients::Bt601)
        .set_full_color_range(true);
    Ok(file.to_vec(&colour, alpha.as_deref(), pixels.width, pixels.height, DEPTH as u8))
}

/// The settings part of an AVIF cache key: change it and every AVIF is encoded anew.
pub(crate) fn describe(quality: u8) -> String {
    format!("avif-rav1e0.8-420-10bit-q{quality}-s{SPEED}")
}

/// rav1e's quantizer (0 best - 255) for a quality of 1-100: ravif's mapping, which the
/// qualities measured in docs/BENCHMARKS.md were first chosen with.
fn quantizer(quality: u8) -> usize {
    let q = f32::from(quality) / 100.0;
    let x = if q >= 0.82 {
        (1.0 - q) * 2.6
    } else if q > 0.25 {
        q.mul_add(-0.5, 0.875)
    } else {
        1.0 - q
    };
    (x * 255.0).round() as usize
}

/// One still AV1 image, filled by `fill`, as its bitstream.
fn encode_av1(
    width: usize,
    height: usize,
    quantizer: usize,
    speed: u8,
    sampling: ChromaSampling,
    fill: impl FnOnce(&mut Frame<u16>),
) -> anyhow::Result<Vec<u8>> {
    let mut config = EncoderConfig::with_speed_preset(speed);
    config.width = width;
    config.height = height;
    config.bit_depth = DEPTH;
    config.chroma_sampling = sampling;
    config.pixel_range = PixelRange::Full;
    if sampling != ChromaSampling::Cs400 {
        config.color_description = Some(ColorDescription {
            transfer_characteristics: TransferCharacteristics::SRGB,
            color_primaries: ColorPrimaries::BT709,
            matrix_coefficients: MatrixCoefficients::BT601,
        });
    }
    config.still_picture = true;
    config.quantizer = quantizer;
    config.min_quantizer = quantizer as u8;
    // One frame: nothing to look ahead at or to detect scenes in.
    config.speed_settings.rdo_lookahead_frames = 1;
    config.speed_settings.scene_detection_mode = SceneDetectionSpeed::None;
    let failed = |e: &dyn std::fmt::Display| anyhow!("AVIF encoding failed: {e}");
    let mut context: Context<u16> =
        Config::new().with_encoder_config(config).with_threads(1).new_context().map_err(|e| failed(&e))?;
    let mut frame = context.new_frame();
    fill(&mut frame);
    context.send_frame(frame).map_err(|e| failed(&e))?;
    context.flush();
    let mut bitstream = Vec::new();
    loop {
        match context.receive_packet() {
            Ok(mut packet) => bitstream.append(&mut packet.data),
            Err(EncoderStatus::Encoded) => {}
            Err(EncoderStatus::LimitReached) => return Ok(bitstream),
            Err(e) => return Err(failed(&e)),
        }
    }
}

/// The full-range BT.601 luma of every pixel, and the chroma of every 2x2 block (from the block's
/// mean colour, which is the mean of its pixels' chroma: the conversion is linear).
fn fill_ycbcr_420(data: &[u8], width: usize, height: usize, channels: usize, frame: &mut Frame<u16>) {
    let rgb = |x: usize, y: usize| {
        let p = &data[(y * width + x) * channels..];
        [p[0], p[1], p[2]].map(|c| f32::from(c) / 255.0)
    };
    let luma = |[r, g, b]: [f32; 3]| KR * r + (1.0 - KR - KB) * g + KB * b;
    let lumas =
        (0..height).flat_map(|y| (0..width).map(move |x| (x, y))).map(|(x, y)| to_sample(luma(rgb(x, y))));
    fill_plane(&mut frame.planes[0], width, lumas);
    let (chroma_width, chroma_height) = (width.div_ceil(2), height.div_ceil(2));
    let block_means =
        (0..chroma_height).flat_map(|cy| (0..chroma_width).map(move |cx| (cx, cy))).map(|(cx, cy)| {
            let (mut sum, mut count) = ([0.0f32; 3], 0.0);
            for y in cy * 2..(cy * 2 + 2).min(height) {
                for x in cx * 2..(cx * 2 + 2).min(width) {
                    let p = rgb(x, y);
                    (0..3).for_each(|c| sum[c] += p[c]);
                    count += 1.0;
                }
            }
            sum.map(|s| s / count)
        });
    let samples = chroma_width * chroma_height;
    let (mut cb, mut cr) = (Vec::with_capacity(samples), Vec::with_capacity(samples));
    for mean @ [r, _, b] in block_means {
        let y = luma(mean);
        cb.push(to_sample((b - y) / (2.0 * (1.0 - KB)) + 0.5));
        cr.push(to_sample((r - y) / (2.0 * (1.0 - KR)) + 0.5));
    }
    fill_plane(&mut frame.planes[1], chroma_width, cb.into_iter());
    fill_plane(&mut frame.planes[2], chroma_width, cr.into_iter());
}

/// A value of 0.0-1.0 as a 10-bit sample.
fn to_sample(value: f32) -> u16 {
    (value.clamp(0.0, 1.0) * MAX_SAMPLE).round() as u16
}

/// `samples`, row by row of `width`, into the visible part of `plane` (rav1e pads the rest).
fn fill_plane(plane: &mut Plane<u16>, width: usize, samples: impl Iterator<Item = u16>) {
    let mut samples = samples.peekable();
    let mut rows = plane.mut_slice(Default::default());
    for row in rows.rows_iter_mut() {
        if samples.peek().is_none() {
            break;
        }
        for (sample, value) in row[..width].iter_mut().zip(&mut samples) {
            *sample = value;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_encoding_is_an_avif_file_of_the_same_size() {
        // Odd sizes too: their last chroma sample covers one column or row.
        for (width, height) in [(40, 24), (41, 23), (1, 1)] {
            for alpha in [false, true] {
                let channels = if alpha { 4 } else { 3 };
                let data = (0..width * height * channels).map(|i| (i * 7 % 251) as u8).collect();
                let pixels = Pixels { width: width as u32, height: height as u32, alpha, data };
                let avif = encode(&pixels, 50).unwrap();
                assert_eq!(&avif[4..12], b"ftypavif");
                let size = imagesize::blob_size(&avif).unwrap();
                assert_eq!((size.width, size.height), (width, height), "{width}x{height} alpha {alpha}");
            }
        }
        assert!(encode(&Pixels { width: 0, height: 3, alpha: false, data: Vec::new() }, 50).is_err());
        let short = Pixels { width: 4, height: 4, alpha: false, data: vec![0; 47] };
        assert!(encode(&short, 50).is_err(), "pixel data of the wrong length");
    }

    #[test]
    fn colours_are_full_range_bt601_with_420_chroma() {
        // Pure red: luma 0.299, Cb below the middle, Cr at the top.
        let mut frame = Frame::<u16>::new_with_padding(4, 2, ChromaSampling::Cs420, 0);
        fill_ycbcr_420(&[255, 0, 0].repeat(8), 4, 2, 3, &mut frame);
        let sample = |plane: usize| frame.planes[plane].p(0, 0);
        assert_eq!(sample(0), to_sample(0.299));
        assert_eq!(sample(1), to_sample(0.5 - 0.299 / (2.0 * (1.0 - KB))));
        assert_eq!(sample(2), 1023);
        // A 2x2 block of black and white averages to mid-grey chroma-free.
        let mut frame = Frame::<u16>::new_with_padding(2, 2, ChromaSampling::Cs420, 0);
        fill_ycbcr_420(&[0, 0, 0, 255, 255, 255, 255, 255, 255, 0, 0, 0], 2, 2, 3, &mut frame);
        assert_eq!((frame.planes[0].p(0, 0), frame.planes[0].p(1, 0)), (0, 1023));
        assert_eq!((frame.planes[1].p(0, 0), frame.planes[2].p(0, 0)), (512, 512));
    }

    #[test]
    fn the_avif_quality_is_the_webp_quality() {
        let lossy = |quality| Encoding { quality, max_side: 0, animation: None };
        assert_eq!(quality_for(&lossy(Some(60))), 60);
        assert_eq!(quality_for(&lossy(Some(0))), 1);
        assert_eq!(quality_for(&lossy(None)), AUTO_QUALITY, "a lossless WebP: auto's quality");
    }
}
