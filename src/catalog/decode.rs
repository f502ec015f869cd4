//! Image file bytes to 8-bit RGB or RGBA pixels.
//!
//! The decoder is chosen by content, not by file name: JPEG and PNG go through zune-image, GIF
//! (first frame) through the `gif` crate and WebP through libwebp, because zune-image 0.5 decodes
//! neither of the last two here. Everything ends in the one layout the WebP encoder takes:
//! interleaved 8-bit RGB, or RGBA when some pixel is not fully opaque.

use anyhow::{anyhow, bail, Context};
use zune_core::bit_depth::BitDepth;
use zune_core::colorspace::ColorSpace;
use zune_core::options::DecoderOptions;
use zune_image::image::Image;

/// Decoded pixels, rows top to bottom, `alpha` telling whether each pixel has 4 bytes or 3.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pixels {
    pub width: u32,
    pub height: u32,
    pub alpha: bool,
    pub data: Vec<u8>,
}

pub fn decode(bytes: &[u8]) -> anyhow::Result<Pixels> {
    let pixels = if bytes.starts_with(b"GIF8") {
        decode_gif(bytes)?
    } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        decode_webp(bytes)?
    } else {
        decode_zune(bytes)?
    };
    Ok(drop_opaque_alpha(pixels))
}

fn decode_zune(bytes: &[u8]) -> anyhow::Result<Pixels> {
    let mut image =
        Image::read(std::io::Cursor::new(bytes), DecoderOptions::default()).map_err(zune_error)?;
    let target = if image.colorspace().has_alpha() { ColorSpace::RGBA } else { ColorSpace::RGB };
    image.convert_depth(BitDepth::Eight).map_err(zune_error)?;
    image.convert_color(target).map_err(zune_error)?;
    let (width, height) = image.dimensions();
    let data = image.flatten_to_u8().into_iter().next().context("image has no frame")?;
    pixels(width, height, target == ColorSpace::RGBA, data)
}

/// zune's errors end in newlines; a log line must not.
fn zune_error(e: impl std::fmt::Debug) -> anyhow::Error {
    anyhow!("{}", format!("{e:?}").trim())
}

/// The first frame of a GIF, placed on its logical screen (transparent where the frame is not).
fn decode_gif(bytes: &[u8]) -> anyhow::Result<Pixels> {
    let mut options = gif::DecodeOptions::new();
    options.set_color_output(gif::ColorOutput::RGBA);
    let mut decoder = options.read_info(bytes)?;
    let (width, height) = (usize::from(decoder.width()), usize::from(decoder.height()));
    let frame = decoder.read_next_frame()?.context("GIF has no frame")?;
    let mut canvas = vec![0u8; width * height * 4];
    let (left, top, fw) = (usize::from(frame.left), usize::from(frame.top), usize::from(frame.width));
    let visible = fw.min(width.saturating_sub(left)) * 4;
    if visible > 0 {
        for (y, row) in frame.buffer.chunks_exact(fw * 4).enumerate().take(height.saturating_sub(top)) {
            let at = ((top + y) * width + left) * 4;
            canvas[at..at + visible].copy_from_slice(&row[..visible]);
        }
    }
    pixels(width, height, true, canvas)
}

fn decode_webp(bytes: &[u8]) -> anyhow::Result<Pixels> {
    let image = webp::Decoder::new(bytes).decode().context("not a decodable still WebP image")?;
    let alpha = image.is_alpha();
    pixels(image.width() as usize, image.height() as usize, alpha, image.to_vec())
}

fn pixels(width: usize, height: usize, alpha: bool, data: Vec<u8>) -> anyhow::Result<Pixels> {
    if width == 0 || height == 0 {
        bail!("image is {width}x{height} pixels");
    }
    let expected = width * height * if alpha { 4 } else { 3 };
    if data.len() != expected {
        bail!("decoder returned {} bytes for {width}x{height} pixels, expected {expected}", data.len());
    }
    Ok(Pixels { width: u32::try_from(width)?, height: u32::try_from(height)?, alpha, data })
}

/// RGBA whose every pixel is opaque carries no information in its alpha: drop it.
fn drop_opaque_alpha(p: Pixels) -> Pixels {
    if !p.alpha || p.data.chunks_exact(4).any(|px| px[3] != 255) {
        return p;
    }
    let data = p.data.chunks_exact(4).flat_map(|px| [px[0], px[1], px[2]]).collect();
    Pixels { alpha: false, data, ..p }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rgba(width: u32, height: u32, f: impl Fn(u32, u32) -> [u8; 4]) -> Vec<u8> {
        let f = &f;
        (0..height).flat_map(|y| (0..width).flat_map(move |x| f(x, y))).collect()
    }

    #[test]
    fn png_pixels_come_back_exactly() {
        let data = rgba(5, 3, |x, y| [x as u8 * 40, y as u8 * 80, 7, if x == 0 { 0 } else { 255 }]);
        let png = Image::from_u8(&data, 5, 3, ColorSpace::RGBA)
            .write_to_vec(zune_image::codecs::ImageFormat::PNG)
            .unwrap();
        assert_eq!(decode(&png).unwrap(), Pixels { width: 5, height: 3, alpha: true, data });
    }

    #[test]
    fn opaque_images_are_rgb() {
        let data = rgba(2, 2, |x, y| [x as u8, y as u8, 9, 255]);
        let png = Image::from_u8(&data, 2, 2, ColorSpace::RGBA)
            .write_to_vec(zune_image::codecs::ImageFormat::PNG)
            .unwrap();
        let p = decode(&png).unwrap();
        assert!(!p.alpha);
        assert_eq!(p.data, vec![0, 0, 9, 1, 0, 9, 0, 1, 9, 1, 1, 9]);
    }

    #[test]
    fn grayscale_becomes_rgb() {
        let png = Image::from_u8(&[0, 100, 200, 255], 2, 2, ColorSpace::Luma)
            .write_to_vec(zune_image::codecs::ImageFormat::PNG)
            .unwrap();
        let p = decode(&png).unwrap();
        assert_eq!(p.data, vec![0, 0, 0, 100, 100, 100, 200, 200, 200, 255, 255, 255]);
    }

    #[test]
    fn gif_first_frame_is_placed_on_its_screen() {
        let mut gif_bytes = Vec::new();
        {
            let mut enc = gif::Encoder::new(&mut gif_bytes, 4, 3, &[255, 0, 0, 0, 0, 255]).unwrap();
            let mut frame = gif::Frame { left: 1, top: 1, width: 2, height: 1, ..Default::default() };
            frame.buffer = std::borrow::Cow::Borrowed(&[0, 1]);
            enc.write_frame(&frame).unwrap();
            let mut second = gif::Frame { width: 4, height: 3, ..Default::default() };
            second.buffer = std::borrow::Cow::Borrowed(&[1; 12]);
            enc.write_frame(&second).unwrap();
        }
        let p = decode(&gif_bytes).unwrap();
        assert_eq!((p.width, p.height, p.alpha), (4, 3, true));
        let px = |x: usize, y: usize| &p.data[(y * 4 + x) * 4..][..4];
        assert_eq!(px(0, 0), [0, 0, 0, 0], "outside the first frame is transparent");
        assert_eq!(px(1, 1), [255, 0, 0, 255]);
        assert_eq!(px(2, 1), [0, 0, 255, 255]);
        assert_eq!(px(3, 2), [0, 0, 0, 0]);
    }

    #[test]
    fn webp_input_round_trips() {
        let data = rgba(3, 2, |x, y| [x as u8, y as u8, 200, 255]);
        let mut config = webp::WebPConfig::new().unwrap();
        config.lossless = 1;
        let webp_bytes =
            webp::Encoder::new(&data, webp::PixelLayout::Rgba, 3, 2).encode_advanced(&config).unwrap();
        let p = decode(&webp_bytes).unwrap();
        assert_eq!((p.width, p.height, p.alpha), (3, 2, false));
        assert_eq!(p.data, data.chunks(4).flat_map(|c| [c[0], c[1], c[2]]).collect::<Vec<_>>());
    }

    #[test]
    fn garbage_and_truncated_files_are_errors() {
        assert!(decode(b"not an image at all").is_err());
        assert!(decode(b"GIF89a").is_err());
        assert!(decode(b"RIFF\0\0\0\0WEBPVP8L").is_err());
        assert!(decode(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR").is_err());
        assert!(decode(b"\xff\xd8\xff\xe0\0\x10JFIF\0").is_err());
    }
}
