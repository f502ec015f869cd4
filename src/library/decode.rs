//! Image file bytes to 8-bit RGB or RGBA pixels, with the checks that keep a hostile file from
//! hurting the server.
//!
//! The format is told by content, not by file name: JPEG goes through zune-jpeg, PNG through the
//! `png` crate, GIF (first frame; `animation` keeps the rest) through the `gif` crate, WebP through
//! libwebp, TIFF and BMP through the image crate, JPEG XL through jxl-oxide and, with the `heif`
//! feature, HEIC and AVIF through libheif (`heif`). Each decoder also hands over the colour profile
//! and orientation it found, and [`develop`] makes the picture upright and sRGB before anything
//! else sees it. Before any decoder runs, [`probe`] reads the dimensions from the file's header, so
//! that a file claiming 100,000 x 100,000 pixels is refused before a byte of pixels is allocated.
//!
//! Memory is bounded for every input, not only its pixels. Metadata never inflates past
//! [`METADATA_BUDGET`]: the `png` crate keeps compressed text chunks compressed and inflates a
//! colour profile only up to its limit, decoding the image without a profile that is larger
//! (zune-png inflated both without one: a 1 MB file took 2.8 GB); the image crate's decoders and
//! jxl-oxide work within an allocation limit; JPEG, GIF and WebP keep their metadata uncompressed,
//! so it is bounded by the file.
//!
//! One policy for damaged files, the same for uploads and for the library: an image is served only
//! when its decoder read all of it. A JPEG whose data ends early is refused (zune-jpeg's strict
//! mode), never filled in as a large grey image; so is a PNG or a JPEG XL whose data ends early.
//! Everything ends in [`Pixels`], the one layout the WebP encoder takes. Errors are worded for the
//! operator's log ("a damaged or truncated PNG"), with the decoder's own words after them.

use anyhow::{anyhow, bail, Context};
use zune_core::bytestream::ZCursor;
use zune_core::colorspace::ColorSpace;
use zune_core::options::DecoderOptions;
use zune_jpeg::JpegDecoder;

use super::develop::{self, develop, develop16, Metadata};

pub use super::pixels::Pixels;

/// The source formats keiko reads, told apart by their first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    Jpeg,
    Png,
    Gif,
    /// WebP whose image is lossless (VP8L) ...
    WebpLossless,
    /// ... or lossy (VP8, possibly with an alpha chunk).
    WebpLossy,
    Tiff,
    Bmp,
    Jxl,
    /// HEIF with HEVC inside: what phones write.
    Heic,
    /// HEIF with AV1 inside.
    Avif,
}

impl Format {
    pub(crate) fn sniff(bytes: &[u8]) -> Option<Format> {
        if bytes.starts_with(b"\xff\xd8\xff") {
            Some(Format::Jpeg)
        } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
            Some(Format::Png)
        } else if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
            Some(Format::Gif)
        } else if bytes.starts_with(b"II*\0") || bytes.starts_with(b"MM\0*") {
            Some(Format::Tiff)
        } else if bytes.starts_with(b"BM") {
            Some(Format::Bmp)
        } else if bytes.starts_with(b"\xff\x0a") || bytes.starts_with(b"\0\0\0\x0cJXL \r\n\x87\n") {
            Some(Format::Jxl)
        } else if bytes.get(4..8) == Some(b"ftyp") {
            heif_brand(bytes)
        } else if bytes.len() >= 16 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
            let lossless = &bytes[12..16] == b"VP8L" || (&bytes[12..16] == b"VP8X" && has_vp8l_chunk(bytes));
            Some(if lossless { Format::WebpLossless } else { Format::WebpLossy })
        } else {
            None
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Format::Jpeg => "JPEG",
            Format::Png => "PNG",
            Format::Gif => "GIF",
            Format::WebpLossless | Format::WebpLossy => "WebP",
            Format::Tiff => "TIFF",
            Format::Bmp => "BMP",
            Format::Jxl => "JPEG XL",
            Format::Heic => "HEIC",
            Format::Avif => "AVIF",
        }
    }

    /// Whether the source holds exact pixels (so that lossy re-encoding would lose something).
    pub(crate) fn is_lossless(self) -> bool {
        matches!(self, Format::Png | Format::Gif | Format::WebpLossless | Format::Tiff | Format::Bmp)
    }
}

/// HEIC or AVIF from an ISO media file's `ftyp` box: its major brand and the compatible brands
/// that follow (AV1 wins when a file lists both), or None for other media (an MP4 video).
fn heif_brand(bytes: &[u8]) -> Option<Format> {
    let size = u32::from_be_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
    let brands: Vec<&[u8]> = bytes
        .get(8..size.min(bytes.len()))?
        .chunks_exact(4)
        .enumerate()
        .filter(|(i, _)| *i != 1)
        .map(|(_, b)| b)
        .collect();
    if brands.iter().any(|b| matches!(*b, b"avif" | b"avis")) {
        Some(Format::Avif)
    } else if brands
        .iter()
        .any(|b| matches!(*b, b"heic" | b"heix" | b"heim" | b"heis" | b"hevc" | b"hevx" | b"mif1" | b"msf1"))
    {
        Some(Format::Heic)
    } else {
        None
    }
}

/// Whether an extended (VP8X) WebP file holds a VP8L image chunk.
fn has_vp8l_chunk(bytes: &[u8]) -> bool {
    riff_chunk(bytes, b"VP8L").is_some()
}

/// The payload of the first chunk of `kind` in a WebP file (RIFF: a four-byte kind, a
/// little-endian size, the payload, padded to an even length), cut short at the file's end.
fn riff_chunk<'a>(bytes: &'a [u8], kind: &[u8; 4]) -> Option<&'a [u8]> {
    let mut at = 12;
    while at + 8 <= bytes.len() {
        let size = u32::from_le_bytes([bytes[at + 4], bytes[at + 5], bytes[at + 6], bytes[at + 7]]) as usize;
        if &bytes[at..at + 4] == kind {
            return Some(&bytes[at + 8..(at + 8).saturating_add(size).min(bytes.len())]);
        }
        at = at.saturating_add(8 + size + (size & 1));
    }
    None
}

/// Why a file whose first bytes begin no known format is refused.
pub(crate) const NOT_AN_IMAGE: &str =
    "it is not a JPEG, PNG, GIF, WebP, TIFF, BMP, JPEG XL, HEIC or AVIF image (judged by its content)";

/// Why a HEIC or AVIF file is refused by a build without libheif.
#[cfg(not(feature = "heif"))]
const NO_HEIF: &str =
    "this keiko was built without HEIC and AVIF input (cargo build --features heif, with libheif-dev)";

/// The input formats this build reads, for the startup log and `/info`.
pub(crate) const READS: &str = if cfg!(feature = "heif") {
    "JPEG, PNG, GIF, WebP, TIFF, BMP, JPEG XL, HEIC, AVIF"
} else {
    "JPEG, PNG, GIF, WebP, TIFF, BMP, JPEG XL (HEIC and AVIF need --features heif)"
};

/// The format and dimensions from the header alone, refusing images over `max_pixels`.
pub fn probe(bytes: &[u8], max_pixels: u64) -> anyhow::Result<(Format, u32, u32)> {
    if bytes.is_empty() {
        bail!("the file is empty");
    }
    let format = Format::sniff(bytes).context(NOT_AN_IMAGE)?;
    #[cfg(not(feature = "heif"))]
    if matches!(format, Format::Heic | Format::Avif) {
        bail!("a {}: {NO_HEIF}", format.name());
    }
    if format == Format::Png && bytes.get(12..16) != Some(b"IHDR") {
        bail!("a damaged or truncated PNG: it does not start with a header chunk");
    }
    let unreadable = |e: &dyn std::fmt::Display| {
        anyhow!("a damaged or truncated {}: its header cannot be read ({e})", format.name())
    };
    let (width, height) = match format {
        // imagesize reads a top-down BMP's negative height as four billion rows.
        Format::Bmp => {
            use image::ImageDecoder;
            let decoder = image::codecs::bmp::BmpDecoder::new(std::io::Cursor::new(bytes))
                .map_err(|e| unreadable(&e))?;
            let (width, height) = decoder.dimensions();
            (u64::from(width), u64::from(height))
        }
        _ => {
            let size = imagesize::blob_size(bytes).map_err(|e| unreadable(&e))?;
            (size.width as u64, size.height as u64)
        }
    };
    if width == 0 || height == 0 {
        bail!("a damaged {}: its header says {width}x{height} pixels", format.name());
    }
    if width * height > max_pixels {
        bail!(
            "it is {width}x{height} = {:.1} megapixels, over the limit of {:.1} (KEIKO_MAX_PIXELS)",
            (width * height) as f64 / 1e6,
            max_pixels as f64 / 1e6
        );
    }
    Ok((format, u32::try_from(width)?, u32::try_from(height)?))
}

/// What a decoder may allocate besides the pixels themselves: metadata (a PNG's colour profile
/// and text) and its working rows. Past it the file is refused.
pub(crate) const METADATA_BUDGET: u64 = 8 << 20;

/// A decoded image as it is to be shown (see [`develop`]), and a warning for the operator's log
/// when part of its metadata was of no use.
#[derive(Debug)]
pub struct Decoded {
    pub pixels: Pixels,
    pub warning: Option<String>,
}

/// What a decoder gives: 8-bit pixels, or 16-bit RGB(A) samples when a colour profile is to be
/// applied to them before they are rounded.
enum Samples {
    Eight(Pixels),
    Sixteen { width: u32, height: u32, alpha: bool, data: Vec<u16> },
}

impl From<Pixels> for Samples {
    fn from(pixels: Pixels) -> Samples {
        Samples::Eight(pixels)
    }
}

/// Decodes a file that [`probe`] accepted as `format`: upright, in sRGB.
pub fn decode(bytes: &[u8], format: Format, max_pixels: u64) -> anyhow::Result<Decoded> {
    let (samples, metadata) = match format {
        Format::Gif => decode_gif(bytes, max_pixels).map(|p| (p.into(), Metadata::default())),
        Format::WebpLossless | Format::WebpLossy => decode_webp(bytes).map(|(p, m)| (p.into(), m)),
        Format::Png => decode_png(bytes),
        Format::Jpeg => decode_jpeg(bytes).map(|(p, m)| (p.into(), m)),
        Format::Tiff => decode_with_image(bytes, image::ImageFormat::Tiff, max_pixels),
        Format::Bmp => decode_with_image(bytes, image::ImageFormat::Bmp, max_pixels),
        Format::Jxl => decode_jxl(bytes, max_pixels).map(|p| (p.into(), Metadata::default())),
        #[cfg(feature = "heif")]
        Format::Heic | Format::Avif => super::heif::decode(bytes, max_pixels).map(|(p, m)| (p.into(), m)),
        #[cfg(not(feature = "heif"))]
        Format::Heic | Format::Avif => bail!(NO_HEIF),
    }
    .with_context(|| format!("a damaged or truncated {}", format.name()))?;
    let (pixels, warning) = match samples {
        Samples::Eight(pixels) => develop(pixels, &metadata),
        Samples::Sixteen { width, height, alpha, data } => develop16(width, height, alpha, data, &metadata),
    };
    Ok(Decoded { pixels: drop_opaque_alpha(pixels), warning })
}

/// A format the image crate decodes (TIFF, BMP), within `max_pixels` and the metadata budget:
/// its first image, its colour profile and orientation. 16-bit RGB(A) with a profile stays
/// 16-bit until the profile is applied; everything else becomes 8-bit RGB or RGBA.
fn decode_with_image(
    bytes: &[u8],
    format: image::ImageFormat,
    max_pixels: u64,
) -> anyhow::Result<(Samples, Metadata)> {
    use image::ImageDecoder;
    let mut reader = image::ImageReader::with_format(std::io::Cursor::new(bytes), format);
    let mut limits = image::Limits::default();
    // The largest output (16-bit RGBA) and the decoder's metadata and working buffers.
    limits.max_alloc = Some(max_pixels.saturating_mul(8).saturating_add(METADATA_BUDGET));
    reader.limits(limits);
    let mut decoder = reader.into_decoder()?;
    let orientation = decoder.orientation()?;
    // image 0.25.10's TIFF decoder finds no profile once limits are set on it: the profile is
    // read by a second decoder with the tiff crate's own limits (1 MiB for any tag's value).
    let icc = match format {
        image::ImageFormat::Tiff => {
            image::codecs::tiff::TiffDecoder::new(std::io::Cursor::new(bytes))?.icc_profile()?
        }
        _ => decoder.icc_profile()?,
    };
    let metadata = Metadata { icc, orientation };
    let image = image::DynamicImage::from_decoder(decoder)?;
    let (width, height) = (image.width(), image.height());
    let samples = match image {
        image::DynamicImage::ImageRgb16(rgb) if metadata.icc.is_some() => {
            Samples::Sixteen { width, height, alpha: false, data: rgb.into_raw() }
        }
        image::DynamicImage::ImageRgba16(rgba) if metadata.icc.is_some() => {
            Samples::Sixteen { width, height, alpha: true, data: rgba.into_raw() }
        }
        image if image.color().has_alpha() => {
            Samples::Eight(pixels(width as usize, height as usize, true, image.into_rgba8().into_raw())?)
        }
        image => {
            Samples::Eight(pixels(width as usize, height as usize, false, image.into_rgb8().into_raw())?)
        }
    };
    Ok((samples, metadata))
}

/// A JPEG as 8-bit RGB, its EXIF and colour profile kept aside. A CMYK JPEG with a CMYK profile
/// is converted through the profile here (the pixels cannot reach [`develop`] as CMYK); without
/// one, zune-jpeg's plain conversion stands.
fn decode_jpeg(bytes: &[u8]) -> anyhow::Result<(Pixels, Metadata)> {
    let options = DecoderOptions::default().set_strict_mode(true).jpeg_set_out_colorspace(ColorSpace::RGB);
    let mut decoder = JpegDecoder::new_with_options(ZCursor::new(bytes), options);
    decoder.decode_headers().map_err(zune_error)?;
    let (width, height) = decoder.dimensions().context("no dimensions after the headers")?;
    let mut metadata = Metadata::with_exif(decoder.icc_profile(), decoder.exif().map(Vec::as_slice));
    let cmyk_profile = metadata.icc.as_deref().filter(|icc| {
        decoder.input_colorspace() == Some(ColorSpace::CMYK)
            && develop::profile(icc).is_ok_and(|p| p.color_space == moxcms::DataColorSpace::Cmyk)
    });
    if let Some(icc) = cmyk_profile {
        decoder.set_options(options.jpeg_set_out_colorspace(ColorSpace::CMYK));
        let mut cmyk = decoder.decode().map_err(zune_error)?;
        // Adobe's CMYK JPEGs store 255 for no ink, as zune-jpeg's own conversion assumes.
        cmyk.iter_mut().for_each(|v| *v = 255 - *v);
        let pixels =
            develop::cmyk_to_srgb(&cmyk, width as u32, height as u32, icc).map_err(|e| anyhow!(e))?;
        metadata.icc = None;
        return Ok((pixels, metadata));
    }
    let data = decoder.decode().map_err(zune_error)?;
    Ok((pixels(width, height, false, data)?, metadata))
}

/// A JPEG XL's first frame, rendered by jxl-oxide straight to 8-bit sRGB (converted from its
/// colour encoding or profile by moxcms) and upright (the codestream's orientation, which the
/// format says wins over any EXIF). Its allocations are tracked and capped like the other
/// decoders' output: 16 bytes a pixel (jxl-oxide works in 32-bit floats) and the metadata budget.
fn decode_jxl(bytes: &[u8], max_pixels: u64) -> anyhow::Result<Pixels> {
    let budget = max_pixels.saturating_mul(16).saturating_add(METADATA_BUDGET);
    let tracker = jxl_oxide::AllocTracker::with_limit(usize::try_from(budget).unwrap_or(usize::MAX));
    let mut image =
        jxl_oxide::JxlImage::builder().alloc_tracker(tracker).read(bytes).map_err(|e| anyhow!("{e}"))?;
    anyhow::ensure!(image.is_loading_done(), "its data ends early");
    image.request_color_encoding(jxl_oxide::EnumColourEncoding::srgb(jxl_oxide::RenderingIntent::Relative));
    let render = image.render_frame(0).map_err(|e| anyhow!("{e}"))?;
    let mut stream = render.stream();
    let (width, height, channels) = (stream.width() as usize, stream.height() as usize, stream.channels());
    let mut data = vec![0u8; width * height * channels as usize];
    stream.write_to_buffer(&mut data);
    match channels {
        1 => pixels(width, height, false, data.iter().flat_map(|&g| [g, g, g]).collect()),
        2 => {
            pixels(width, height, true, data.chunks_exact(2).flat_map(|g| [g[0], g[0], g[0], g[1]]).collect())
        }
        3 => pixels(width, height, false, data),
        4 => pixels(width, height, true, data),
        n => bail!("it renders to {n} channels"),
    }
}

/// A PNG as 8-bit RGB or RGBA (palettes, grey and 16-bit samples converted), or as 16-bit RGB(A)
/// samples when it has them and a colour profile.
fn decode_png(bytes: &[u8]) -> anyhow::Result<(Samples, Metadata)> {
    let open = |transformations| {
        let limits = png::Limits { bytes: METADATA_BUDGET as usize };
        let mut decoder = png::Decoder::new_with_limits(std::io::Cursor::new(bytes), limits);
        decoder.set_transformations(transformations);
        decoder.read_info().map_err(png_error)
    };
    let mut reader = open(png::Transformations::normalize_to_color8())?;
    let info = reader.info();
    let metadata =
        Metadata::with_exif(info.icc_profile.as_deref().map(<[u8]>::to_vec), info.exif_metadata.as_deref());
    let sixteen = info.bit_depth == png::BitDepth::Sixteen
        && matches!(info.color_type, png::ColorType::Rgb | png::ColorType::Rgba);
    if sixteen && metadata.icc.is_some() {
        let mut reader = open(png::Transformations::EXPAND)?;
        let size = reader.output_buffer_size().context("the image is too large to decode")?;
        let mut data = vec![0; size];
        let frame = reader.next_frame(&mut data).map_err(png_error)?;
        data.truncate(frame.buffer_size());
        let alpha = frame.color_type == png::ColorType::Rgba;
        let data = data.chunks_exact(2).map(|b| u16::from_be_bytes([b[0], b[1]])).collect();
        return Ok((Samples::Sixteen { width: frame.width, height: frame.height, alpha, data }, metadata));
    }
    let size = reader.output_buffer_size().context("the image is too large to decode")?;
    let mut data = vec![0; size];
    let frame = reader.next_frame(&mut data).map_err(png_error)?;
    data.truncate(frame.buffer_size());
    let (width, height) = (frame.width as usize, frame.height as usize);
    let pixels = match frame.color_type {
        png::ColorType::Rgb => pixels(width, height, false, data),
        png::ColorType::Rgba => pixels(width, height, true, data),
        png::ColorType::Grayscale => {
            pixels(width, height, false, data.iter().flat_map(|&g| [g, g, g]).collect())
        }
        png::ColorType::GrayscaleAlpha => {
            let rgba = data.chunks_exact(2).flat_map(|ga| [ga[0], ga[0], ga[0], ga[1]]).collect();
            pixels(width, height, true, rgba)
        }
        png::ColorType::Indexed => bail!("its palette could not be expanded"),
    }?;
    Ok((pixels.into(), metadata))
}

fn png_error(e: png::DecodingError) -> anyhow::Error {
    match e {
        png::DecodingError::LimitsExceeded => anyhow!(
            "its metadata (colour profile or text) would take more than {} MiB to decode",
            METADATA_BUDGET >> 20
        ),
        e => anyhow!("{e}"),
    }
}

/// zune's errors end in newlines; a log line must not.
fn zune_error(e: impl std::fmt::Debug) -> anyhow::Error {
    anyhow!("{}", format!("{e:?}").trim())
}

/// The first frame of a GIF, placed on its logical screen (transparent where the frame is not).
fn decode_gif(bytes: &[u8], max_pixels: u64) -> anyhow::Result<Pixels> {
    let mut options = gif::DecodeOptions::new();
    options.set_color_output(gif::ColorOutput::RGBA);
    // A frame may claim more than the screen the header announced: bound what it may allocate.
    let limit = std::num::NonZeroU64::new(max_pixels.saturating_mul(4)).unwrap_or(std::num::NonZeroU64::MIN);
    options.set_memory_limit(gif::MemoryLimit::Bytes(limit));
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

/// A WebP, or an animated WebP's first frame.
fn decode_webp(bytes: &[u8]) -> anyhow::Result<(Pixels, Metadata)> {
    let pixels = if super::animation::is_animated_webp(bytes) {
        let frames = super::animation::WebpFrames::new(bytes)?;
        let (width, height) = (frames.width as usize, frames.height as usize);
        pixels(width, height, true, frames.frame(0)?)?
    } else {
        let image = webp::Decoder::new(bytes).decode().context("libwebp cannot decode it")?;
        pixels(image.width() as usize, image.height() as usize, image.is_alpha(), image.to_vec())?
    };
    // Some writers start the EXIF chunk with JPEG's "Exif\0\0"; the TIFF header follows it.
    let exif = riff_chunk(bytes, b"EXIF").map(|e| e.strip_prefix(b"Exif\0\0").unwrap_or(e));
    Ok((pixels, Metadata::with_exif(riff_chunk(bytes, b"ICCP").map(<[u8]>::to_vec), exif)))
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
    use zune_image::image::Image;

    use super::*;

    /// Probe, then decode, as the library does.
    fn decode(bytes: &[u8]) -> anyhow::Result<Pixels> {
        let (format, _, _) = probe(bytes, 1 << 30)?;
        super::decode(bytes, format, 1 << 30).map(|decoded| decoded.pixels)
    }

    /// A PNG signature and header chunk claiming `width` x `height`, with no pixel data.
    fn png_header(width: u32, height: u32) -> Vec<u8> {
        let mut ihdr = b"IHDR".to_vec();
        ihdr.extend(width.to_be_bytes());
        ihdr.extend(height.to_be_bytes());
        ihdr.extend([8, 6, 0, 0, 0]);
        let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\x0d".to_vec();
        png.extend(&ihdr);
        png.extend([0; 4]);
        png
    }

    #[test]
    fn a_decompression_bomb_is_refused_from_its_header() {
        let err = probe(&png_header(100_000, 100_000), 50_000_000).unwrap_err().to_string();
        assert!(err.contains("100000x100000") && err.contains("KEIKO_MAX_PIXELS"), "{err}");
        assert!(probe(&png_header(100, 100), 50_000_000).is_ok());
    }

    #[test]
    fn formats_are_told_by_content_and_explained_in_plain_words() {
        assert_eq!(probe(b"", 1).unwrap_err().to_string(), "the file is empty");
        let err = probe(b"hello, I am text", 100).unwrap_err().to_string();
        assert!(err.contains("not a JPEG, PNG, GIF, WebP, TIFF, BMP, JPEG XL, HEIC or AVIF"), "{err}");
        let err = format!("{:#}", decode(&png_header(4, 4)).unwrap_err());
        assert!(err.starts_with("a damaged or truncated PNG"), "{err}");
        let mut config = webp::WebPConfig::new().unwrap();
        config.lossless = 1;
        let lossless =
            webp::Encoder::new(&[9; 12], webp::PixelLayout::Rgb, 2, 2).encode_advanced(&config).unwrap();
        assert_eq!(Format::sniff(&lossless), Some(Format::WebpLossless));
        config.lossless = 0;
        let lossy =
            webp::Encoder::new(&[9; 12], webp::PixelLayout::Rgb, 2, 2).encode_advanced(&config).unwrap();
        assert_eq!(Format::sniff(&lossy), Some(Format::WebpLossy));
    }

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

    /// A 3x2 opaque PNG with an extra chunk of `kind` holding `data` before its image data.
    fn with_chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut encoder = png::Encoder::new(&mut out, 3, 2);
        encoder.set_color(png::ColorType::Rgb);
        let mut writer = encoder.write_header().unwrap();
        writer.write_chunk(png::chunk::ChunkType(*kind), data).unwrap();
        writer.write_image_data(&[7; 3 * 2 * 3]).unwrap();
        drop(writer);
        out
    }

    fn zlib(data: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        z.write_all(data).unwrap();
        z.finish().unwrap()
    }

    #[test]
    fn metadata_that_inflates_past_the_budget_is_never_inflated() {
        let zeros = zlib(&vec![0; 64 << 20]);
        let mut text = b"Comment\0\0".to_vec();
        text.extend(&zeros);
        let text_bomb = with_chunk(b"zTXt", &text);
        assert_eq!(decode(&text_bomb).unwrap().data.len(), 3 * 2 * 3, "compressed text is not inflated");
        let mut profile = b"icc\0\0".to_vec();
        profile.extend(&zeros);
        let decoded = decode(&with_chunk(b"iCCP", &profile)).unwrap();
        assert_eq!(
            decoded.data.len(),
            3 * 2 * 3,
            "decoded without the profile, inflated no further than the budget"
        );
    }

    #[test]
    fn images_whose_data_ends_early_are_refused() {
        let data = rgba(64, 64, |x, y| [x as u8 * 3, y as u8 * 3, (x ^ y) as u8, 255]);
        let jpeg = zune_image::image::Image::from_u8(&data, 64, 64, ColorSpace::RGBA);
        let jpeg = {
            let mut rgb = jpeg;
            rgb.convert_color(ColorSpace::RGB).unwrap();
            rgb.write_to_vec(zune_image::codecs::ImageFormat::JPEG).unwrap()
        };
        assert!(decode(&jpeg).is_ok());
        let err = format!("{:#}", decode(&jpeg[..jpeg.len() / 2]).unwrap_err());
        assert!(err.starts_with("a damaged or truncated JPEG"), "{err}");
        let png = Image::from_u8(&data, 64, 64, ColorSpace::RGBA)
            .write_to_vec(zune_image::codecs::ImageFormat::PNG)
            .unwrap();
        let err = format!("{:#}", decode(&png[..png.len() * 2 / 3]).unwrap_err());
        assert!(err.starts_with("a damaged or truncated PNG"), "{err}");
    }

    #[test]
    fn sixteen_bit_grey_with_alpha_and_palette_pngs_become_8_bit_rgb_or_rgba() {
        let encode = |color: png::ColorType, depth: png::BitDepth, palette: Option<&[u8]>, data: &[u8]| {
            let mut out = Vec::new();
            let mut encoder = png::Encoder::new(&mut out, 2, 1);
            encoder.set_color(color);
            encoder.set_depth(depth);
            if let Some(palette) = palette {
                encoder.set_palette(palette.to_vec());
            }
            encoder.write_header().unwrap().write_image_data(data).unwrap();
            out
        };
        let sixteen = encode(
            png::ColorType::Rgb,
            png::BitDepth::Sixteen,
            None,
            &[255, 0, 0, 0, 128, 0, 0, 0, 0, 0, 0, 255],
        );
        assert_eq!(decode(&sixteen).unwrap().data, [255, 0, 128, 0, 0, 0]);
        let grey_alpha =
            encode(png::ColorType::GrayscaleAlpha, png::BitDepth::Eight, None, &[10, 0, 20, 255]);
        assert_eq!(decode(&grey_alpha).unwrap().data, [10, 10, 10, 0, 20, 20, 20, 255]);
        let palette =
            encode(png::ColorType::Indexed, png::BitDepth::Eight, Some(&[1, 2, 3, 4, 5, 6]), &[1, 0]);
        assert_eq!(decode(&palette).unwrap().data, [4, 5, 6, 1, 2, 3]);
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

    /// A TIFF of `data` (RGB, 8 or 16 bits a sample) with an orientation tag and a profile.
    fn tiff<C: tiff::encoder::colortype::ColorType>(
        width: u32,
        height: u32,
        data: &[C::Inner],
        orientation: u16,
        icc: Option<&[u8]>,
    ) -> Vec<u8>
    where
        [C::Inner]: tiff::encoder::TiffValue,
    {
        let mut out = std::io::Cursor::new(Vec::new());
        let mut encoder = tiff::encoder::TiffEncoder::new(&mut out).unwrap();
        let mut image = encoder.new_image::<C>(width, height).unwrap();
        image.encoder().write_tag(tiff::tags::Tag::Orientation, orientation).unwrap();
        if let Some(icc) = icc {
            image.encoder().write_tag(tiff::tags::Tag::IccProfile, icc).unwrap();
        }
        image.write_data(data).unwrap();
        out.into_inner()
    }

    #[test]
    fn tiff_comes_back_exactly_upright_and_16_bit_through_its_profile() {
        let data: Vec<u8> = (0..2u8).flat_map(|y| (0..3u8).flat_map(move |x| [x * 80, y * 200, 7])).collect();
        let plain = tiff::<tiff::encoder::colortype::RGB8>(3, 2, &data, 1, None);
        assert_eq!(Format::sniff(&plain), Some(Format::Tiff));
        assert_eq!(decode(&plain).unwrap(), Pixels { width: 3, height: 2, alpha: false, data: data.clone() });
        let turned = decode(&tiff::<tiff::encoder::colortype::RGB8>(3, 2, &data, 6, None)).unwrap();
        assert_eq!((turned.width, turned.height), (2, 3), "orientation 6 turns it a quarter");
        assert_eq!(&turned.data[..3], [0, 200, 7], "the stored bottom-left is now top-left");

        // A 16-bit photo in Display P3: one rounding after the conversion, not two.
        let original = [200u16 * 257, 100 * 257, 50 * 257, 30 * 257, 160 * 257, 220 * 257];
        let p3 = moxcms::ColorProfile::new_display_p3();
        let to_p3 = moxcms::ColorProfile::new_srgb()
            .create_transform_16bit(
                moxcms::Layout::Rgb,
                &p3,
                moxcms::Layout::Rgb,
                moxcms::TransformOptions::default(),
            )
            .unwrap();
        let mut stored = [0u16; 6];
        to_p3.transform(&original, &mut stored).unwrap();
        let icc = p3.encode().unwrap();
        let file = tiff::<tiff::encoder::colortype::RGB16>(2, 1, &stored, 1, Some(&icc));
        let shown = decode(&file).unwrap();
        let expected: Vec<u8> = original.iter().map(|&v| (v / 257) as u8).collect();
        let off = shown.data.iter().zip(&expected).map(|(a, b)| a.abs_diff(*b)).max().unwrap();
        assert!(off <= 1, "{:?} for {expected:?}", shown.data);
    }

    #[test]
    fn bmp_comes_back_exactly() {
        use image::ImageEncoder;
        for (alpha, layout) in
            [(false, image::ExtendedColorType::Rgb8), (true, image::ExtendedColorType::Rgba8)]
        {
            let data = rgba(5, 3, |x, y| [x as u8 * 50, y as u8 * 90, 3, if x == 1 { 10 } else { 255 }]);
            let data: Vec<u8> =
                if alpha { data } else { data.chunks(4).flat_map(|p| [p[0], p[1], p[2]]).collect() };
            let mut bmp = Vec::new();
            image::codecs::bmp::BmpEncoder::new(&mut bmp).write_image(&data, 5, 3, layout).unwrap();
            assert_eq!(Format::sniff(&bmp), Some(Format::Bmp));
            assert_eq!(decode(&bmp).unwrap(), Pixels { width: 5, height: 3, alpha, data });
        }
    }

    fn jxl(data: &[u8], width: usize, height: usize, colorspace: ColorSpace) -> Vec<u8> {
        let options = zune_core::options::EncoderOptions::new(
            width,
            height,
            colorspace,
            zune_core::bit_depth::BitDepth::Eight,
        );
        let mut out = Vec::new();
        zune_jpegxl::JxlSimpleEncoder::new(data, options).encode(&mut out).unwrap();
        out
    }

    #[test]
    fn lossless_jpeg_xl_comes_back_exactly_and_truncated_is_refused() {
        let rgba_data = rgba(7, 5, |x, y| [x as u8 * 30, y as u8 * 50, 99, if x == 2 { 0 } else { 255 }]);
        let file = jxl(&rgba_data, 7, 5, ColorSpace::RGBA);
        assert_eq!(Format::sniff(&file), Some(Format::Jxl));
        assert_eq!(probe(&file, 1 << 30).unwrap(), (Format::Jxl, 7, 5));
        assert_eq!(
            decode(&file).unwrap(),
            Pixels { width: 7, height: 5, alpha: true, data: rgba_data.clone() }
        );
        let rgb: Vec<u8> = rgba_data.chunks(4).flat_map(|p| [p[0], p[1], p[2]]).collect();
        assert_eq!(decode(&jxl(&rgb, 7, 5, ColorSpace::RGB)).unwrap().data, rgb);
        let grey = decode(&jxl(&[0, 80, 160, 240], 2, 2, ColorSpace::Luma)).unwrap();
        assert_eq!(grey.data, [0, 0, 0, 80, 80, 80, 160, 160, 160, 240, 240, 240]);
        let big: Vec<u8> = (0..64 * 64 * 3).map(|i| (i * 7 % 251) as u8).collect();
        let file = jxl(&big, 64, 64, ColorSpace::RGB);
        let err = format!("{:#}", decode(&file[..file.len() / 2]).unwrap_err());
        assert!(err.starts_with("a damaged or truncated JPEG XL"), "{err}");
    }

    #[test]
    fn a_top_down_bmp_is_read_at_its_size() {
        use image::ImageEncoder;
        let data: Vec<u8> = (0..4u8).flat_map(|y| (0..3u8).flat_map(move |x| [x * 60, y * 60, 1])).collect();
        let mut bmp = Vec::new();
        image::codecs::bmp::BmpEncoder::new(&mut bmp)
            .write_image(&data, 3, 4, image::ExtendedColorType::Rgb8)
            .unwrap();
        // The same image stored top-down: a negative height and the rows in reading order.
        let offset = u32::from_le_bytes(bmp[10..14].try_into().unwrap()) as usize;
        let stride = (3 * 3usize).div_ceil(4) * 4;
        let rows: Vec<Vec<u8>> = bmp[offset..].chunks(stride).map(<[u8]>::to_vec).collect();
        let mut top_down = bmp[..offset].to_vec();
        top_down[22..26].copy_from_slice(&(-4i32).to_le_bytes());
        rows.iter().rev().for_each(|row| top_down.extend(row));
        assert_eq!(probe(&top_down, 100).unwrap(), (Format::Bmp, 3, 4));
        assert_eq!(decode(&top_down).unwrap().data, data);
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
