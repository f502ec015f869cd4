//! Where a `fit=cover` rendition crops: the centre, or the part of the image with the most to
//! see, in the spirit of libvips' smartcrop (`entropy` and `attention`), computed from the pixels
//! alone.
//!
//! Covering a size of another aspect leaves slack along one axis only, so a crop is an offset
//! along that axis. Both strategies look at a copy at most [`LOOK_SIDE`] pixels long (a fixed,
//! small cost whatever the source's size):
//! - `entropy` (as libvips): shave the slack away from both ends, a slice at a time, always
//!   from the end whose slice has the lower Shannon entropy of its luma histogram;
//! - `attention`: score each pixel by its edge strength (luma Laplacian), its saturation and
//!   whether it has a skin tone (libvips' three cues), and take the window with the highest sum.

use anyhow::anyhow;
use fast_image_resize::images::{Image as ResizeImage, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};

use super::spec::Crop;
use crate::library::decode::Pixels;

/// The longest side of the copy a crop is chosen on.
const LOOK_SIDE: u32 = 256;

/// A window of the source: left, top, width, height, in source pixels.
pub(crate) type Window = (u32, u32, u32, u32);

/// The largest window of `pixels` with the aspect of `width` x `height`, placed as `crop` says.
pub(crate) fn window(pixels: &Pixels, width: u32, height: u32, crop: Crop) -> anyhow::Result<Window> {
    let (sw, sh) = (u64::from(pixels.width), u64::from(pixels.height));
    let (w, h) = (u64::from(width), u64::from(height));
    // Wider than the target: all rows, fewer columns; else all columns, fewer rows.
    let across = sw * h > w * sh;
    let (cw, ch) = if across {
        (((sh * w + h / 2) / h).clamp(1, sw), sh)
    } else {
        (sw, ((sw * h + w / 2) / w).clamp(1, sh))
    };
    let slack = if across { sw - cw } else { sh - ch };
    let offset = match crop {
        _ if slack == 0 => 0,
        Crop::Centre => slack / 2,
        Crop::Entropy | Crop::Attention => {
            let look = looked_at(pixels)?;
            let scale = f64::from(look.width) / pixels.width as f64;
            let (extent, keep) = if across {
                (look.width, ((cw as f64 * scale).round() as u32).clamp(1, look.width))
            } else {
                (look.height, ((ch as f64 * scale).round() as u32).clamp(1, look.height))
            };
            let start = match crop {
                Crop::Entropy => by_entropy(&look, across, extent, keep),
                _ => by_attention(&look, across, extent, keep),
            };
            ((f64::from(start) / scale).round() as u64).min(slack)
        }
    };
    Ok(if across {
        (offset as u32, 0, cw as u32, ch as u32)
    } else {
        (0, offset as u32, cw as u32, ch as u32)
    })
}

/// A small RGB copy of `pixels`, at most [`LOOK_SIDE`] long (alpha dropped).
fn looked_at(pixels: &Pixels) -> anyhow::Result<Pixels> {
    let longer = pixels.width.max(pixels.height);
    let shrink =
        |side: u32| ((u64::from(side) * u64::from(LOOK_SIDE.min(longer)) / u64::from(longer)) as u32).max(1);
    let (width, height) = (shrink(pixels.width), shrink(pixels.height));
    let pixel_type = if pixels.alpha { PixelType::U8x4 } else { PixelType::U8x3 };
    let source = ImageRef::new(pixels.width, pixels.height, &pixels.data, pixel_type)
        .map_err(|e| anyhow!("cannot look at the image: {e}"))?;
    let mut small = ResizeImage::new(width, height, pixel_type);
    let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Box));
    Resizer::new()
        .resize(&source, &mut small, &options)
        .map_err(|e| anyhow!("cannot look at the image: {e}"))?;
    let step = if pixels.alpha { 4 } else { 3 };
    let data = small.buffer().chunks_exact(step).flat_map(|px| [px[0], px[1], px[2]]).collect();
    Ok(Pixels { width, height, alpha: false, data })
}

fn luma(px: &[u8]) -> u8 {
    ((2126 * u32::from(px[0]) + 7152 * u32::from(px[1]) + 722 * u32::from(px[2]) + 5000) / 10_000) as u8
}

/// libvips' entropy crop along one axis: the start of the `keep` lines (columns when `across`)
/// left after shaving `extent - keep` from the ends by lower entropy.
fn by_entropy(look: &Pixels, across: bool, extent: u32, keep: u32) -> u32 {
    let (mut start, mut end) = (0, extent);
    let slice = ((extent - keep) / 8).max(1);
    while end - start > keep {
        let step = slice.min(end - start - keep);
        let head = entropy(look, across, start, start + step);
        let tail = entropy(look, across, end - step, end);
        if head < tail {
            start += step;
        } else {
            end -= step;
        }
    }
    start
}

/// Shannon entropy of the luma histogram of lines `from..to` (columns when `across`).
fn entropy(look: &Pixels, across: bool, from: u32, to: u32) -> f64 {
    let mut histogram = [0u32; 256];
    let (w, h) = (look.width, look.height);
    for y in 0..h {
        for x in 0..w {
            let line = if across { x } else { y };
            if (from..to).contains(&line) {
                let at = ((y * w + x) * 3) as usize;
                histogram[usize::from(luma(&look.data[at..at + 3]))] += 1;
            }
        }
    }
    let total: u32 = histogram.iter().sum();
    histogram
        .iter()
        .filter(|&&n| n > 0)
        .map(|&n| {
            let p = f64::from(n) / f64::from(total);
            -p * p.log2()
        })
        .sum()
}

/// The start of the `keep` lines (columns when `across`) with the most attention: edges,
/// saturation and skin tones summed over the window.
fn by_attention(look: &Pixels, across: bool, extent: u32, keep: u32) -> u32 {
    let (w, h) = (look.width as usize, look.height as usize);
    let lumas: Vec<i32> = look.data.chunks_exact(3).map(|px| i32::from(luma(px))).collect();
    let mut profile = vec![0f64; extent as usize];
    for y in 0..h {
        for x in 0..w {
            let at = y * w + x;
            let px = &look.data[at * 3..at * 3 + 3];
            let edge = if x > 0 && y > 0 && x + 1 < w && y + 1 < h {
                (4 * lumas[at] - lumas[at - 1] - lumas[at + 1] - lumas[at - w] - lumas[at + w]).unsigned_abs()
            } else {
                0
            };
            let (max, min) = (px.iter().max().copied().unwrap_or(0), px.iter().min().copied().unwrap_or(0));
            let saturation = if max == 0 { 0.0 } else { f64::from(max - min) / f64::from(max) };
            let (r, g, b) = (i32::from(px[0]), i32::from(px[1]), i32::from(px[2]));
            let skin =
                r > 95 && g > 40 && b > 20 && r > g && r > b && r - g.min(b) > 15 && (r - g).abs() > 15;
            let score = f64::from(edge) + 64.0 * saturation + if skin { 96.0 } else { 0.0 };
            profile[if across { x } else { y }] += score;
        }
    }
    let keep = keep as usize;
    let mut sum: f64 = profile[..keep].iter().sum();
    let (mut best, mut best_sum) = (0, sum);
    for start in 1..=profile.len() - keep {
        sum += profile[start + keep - 1] - profile[start - 1];
        if sum > best_sum {
            (best, best_sum) = (start, sum);
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A flat grey `width` x `height` image with a busy, colourful square at `x`..`x + side`.
    fn subject_at(width: u32, height: u32, x: u32, side: u32) -> Pixels {
        let mut data = vec![120u8; (width * height * 3) as usize];
        let mut rng = fastrand::Rng::with_seed(3);
        for y in (height - side) / 2..(height + side) / 2 {
            for x in x..x + side {
                let at = ((y * width + x) * 3) as usize;
                data[at..at + 3].copy_from_slice(&[rng.u8(150..), rng.u8(..120), rng.u8(..255)]);
            }
        }
        Pixels { width, height, alpha: false, data }
    }

    #[test]
    fn the_centre_crop_is_centred_and_keeps_the_aspect() {
        let pixels = subject_at(400, 100, 0, 20);
        assert_eq!(window(&pixels, 100, 100, Crop::Centre).unwrap(), (150, 0, 100, 100));
        assert_eq!(window(&subject_at(100, 400, 0, 20), 50, 100, Crop::Centre).unwrap(), (0, 100, 100, 200));
        assert_eq!(window(&pixels, 800, 200, Crop::Centre).unwrap(), (0, 0, 400, 100), "same aspect: all");
    }

    #[test]
    fn smart_crops_keep_a_subject_the_centre_crop_cuts() {
        let pixels = subject_at(900, 200, 20, 120);
        let (left, ..) = window(&pixels, 200, 200, Crop::Centre).unwrap();
        assert!(left > 140, "the centre crop starts at {left}, past the subject");
        for crop in [Crop::Entropy, Crop::Attention] {
            let (left, top, width, height) = window(&pixels, 200, 200, crop).unwrap();
            assert_eq!((top, width, height), (0, 200, 200));
            assert!(left <= 20 && left + width >= 140, "{crop:?}: window starts at {left}");
        }
    }
}
