//! Turning one served WebP body into a rendition: scaled to a size as its fit says (cropped to
//! cover it, from the centre or where `crop` finds the subject; fitted inside it; stretched),
//! blurred, grayscale, encoded as WebP, AVIF or JPEG; or drawn as ASCII art.
//!
//! The source is the catalogue's own encoding, not the original file: it is in memory (mapped),
//! it is exactly what the ETag of the image describes, and it cannot change or vanish under a
//! render the way a file in the image directory can. Scaling uses fast_image_resize (SIMD,
//! Lanczos3), blurring the image crate's fast Gaussian blur. Only WebP keeps an animation
//! animated: AVIF and JPEG renditions of one are a still of its first frame (or `?frame=`).

use anyhow::{anyhow, Context};
use fast_image_resize::images::{Image as ResizeImage, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use image::imageops::fast_blur;
use image::{ImageBuffer, Rgb, Rgba};

use libwebp_sys::{
    VP8StatusCode, WebPDecode, WebPDecoderConfig, WebPFreeDecBuffer, WebPGetFeatures, WebPRGBABuffer,
    WEBP_CSP_MODE,
};

use super::crop;
use super::spec::{Codec, Crop, Fit, Form, Variant, MAX_ASCII_LINES};
use crate::library::animation::{self, WebpFrames};
use crate::library::decode::{Format, Pixels};
use crate::library::encode::{encode, Encoding, Settings};
use crate::library::{avif, jpeg};

/// Characters from darkest to lightest: dense glyphs stand for dark pixels on a light page.
const RAMP: &[u8] = b"@%#*+=-:. ";
/// A character cell is about twice as tall as it is wide.
const CELL_ASPECT: f64 = 2.0;

pub(crate) enum Output {
    Picture(Codec, Vec<u8>),
    Text(Vec<u8>),
}

/// Renders `variant` of `webp` (a body from the catalogue). `go_on` is asked between stages and
/// its error (the render is no longer wanted) stops the render there.
pub(crate) fn render<E>(
    webp: &[u8],
    variant: &Variant,
    settings: Settings,
    go_on: &dyn Fn() -> Result<(), E>,
) -> anyhow::Result<Output>
where
    E: std::error::Error + Send + Sync + 'static,
{
    let format = Format::sniff(webp).context("the encoded image is not WebP")?;
    let codec = variant.codec.unwrap_or(Codec::Webp);
    let mut encoding = settings.for_source(format);
    if variant.quality.is_some() {
        encoding.quality = variant.quality;
    }
    let target = match variant.form {
        Form::Picture(size) => size.map(|(w, h)| (u32::from(w), u32::from(h))),
        Form::Ascii(columns) => Some((u32::from(columns), 1)),
    };
    let pixels = if animation::is_animated_webp(webp) {
        let frames = WebpFrames::new(webp)?;
        match (variant.form, variant.frame) {
            (Form::Picture(size), None) if codec == Codec::Webp => {
                if let Some(animated) = animate(frames, size, variant, encoding, go_on)? {
                    return Ok(Output::Picture(Codec::Webp, animated));
                }
                // Past the animation budget at this size: a still of the first frame.
                first_frame(WebpFrames::new(webp)?, 0)?
            }
            (_, frame) => first_frame(frames, frame.unwrap_or(0))?,
        }
    } else {
        decode(webp, target)?
    };
    go_on()?;
    match variant.form {
        Form::Picture(size) => {
            let mut pixels = match size {
                Some((w, h)) => resize(&pixels, u32::from(w), u32::from(h), variant.fit, variant.crop)?,
                None => pixels,
            };
            if variant.blur > 0 {
                go_on()?;
                pixels = blur(pixels, variant.blur)?;
            }
            if variant.grayscale {
                grayscale(&mut pixels);
            }
            go_on()?;
            let bytes = match codec {
                Codec::Webp => encode(&pixels, encoding)?,
                Codec::Avif => {
                    avif::encode(&pixels, variant.quality.unwrap_or_else(|| avif::quality_for(&encoding)))?
                }
                Codec::Jpeg => jpeg::encode(&pixels, variant.quality.unwrap_or(jpeg::QUALITY))?,
            };
            Ok(Output::Picture(codec, bytes))
        }
        Form::Ascii(columns) => {
            let pixels = if variant.blur > 0 { blur(pixels, variant.blur)? } else { pixels };
            Ok(Output::Text(ascii(&pixels, columns)?))
        }
    }
}

/// Frame `index` (or the last) of an animation as RGBA pixels.
fn first_frame(frames: WebpFrames<'_>, index: u16) -> anyhow::Result<Pixels> {
    let (width, height) = (frames.width, frames.height);
    Ok(Pixels { width, height, alpha: true, data: frames.frame(usize::from(index))? })
}

/// Every frame of an animation scaled and cropped to `size` (or kept), with the effects, encoded
/// as an animated WebP with the source's timing; None when the frames at that size are past the
/// animation budget. `go_on` is asked between frames.
fn animate<E>(
    mut frames: WebpFrames<'_>,
    size: Option<(u16, u16)>,
    variant: &Variant,
    encoding: Encoding,
    go_on: &dyn Fn() -> Result<(), E>,
) -> anyhow::Result<Option<Vec<u8>>>
where
    E: std::error::Error + Send + Sync + 'static,
{
    let (width, height) = match size {
        Some((w, h)) => fitted(frames.width, frames.height, u32::from(w), u32::from(h), variant.fit),
        None => (frames.width, frames.height),
    };
    let budget = encoding.animation.context("an animation without an animation budget")?;
    if !budget.allows(frames.count.into(), width, height) {
        return Ok(None);
    }
    let mut encoder = animation::Encoder::new(width, height, encoding, frames.loop_count)?;
    let (source_width, source_height) = (frames.width, frames.height);
    while let Some((rgba, timestamp)) = frames.next_frame()? {
        go_on()?;
        let canvas = Pixels { width: source_width, height: source_height, alpha: true, data: rgba.to_vec() };
        // Every frame is cropped alike, from the centre: a crop that followed each frame's
        // subject would make the picture jump.
        let mut frame = match size {
            Some((w, h)) => resize(&canvas, u32::from(w), u32::from(h), variant.fit, Crop::Centre)?,
            None => canvas,
        };
        if variant.blur > 0 {
            frame = blur(frame, variant.blur)?;
        }
        if variant.grayscale {
            grayscale(&mut frame);
        }
        encoder.add(&frame.data, timestamp)?;
    }
    Ok(Some(encoder.finish(frames.last_timestamp)?))
}

/// The pixels a render of `variant` from `webp` holds at its peak: the decoded source and the
/// output twice (a resize or blur writes a new image beside the one it reads). An animation is
/// rendered a frame at a time, but libwebp's animation encoder keeps about two frames of its own
/// (the previous canvas and a candidate): two outputs more. An AVIF encoder holds
/// [`avif::BYTES_PER_PIXEL`] per output pixel, counted as that many pixels of 4 bytes.
pub(crate) fn cost(webp: &[u8], variant: &Variant) -> u64 {
    let (mut width, mut height) = (0, 0);
    // SAFETY: reads the header of `webp` (an animation's canvas) and writes the two integers.
    unsafe { libwebp_sys::WebPGetInfo(webp.as_ptr(), webp.len(), &mut width, &mut height) };
    let source = width.max(0) as u64 * height.max(0) as u64;
    let output = match variant.form {
        Form::Picture(Some((w, h))) => u64::from(w) * u64::from(h),
        Form::Picture(None) => source,
        Form::Ascii(columns) => u64::from(columns) * u64::from(MAX_ASCII_LINES),
    };
    let codec = variant.codec.unwrap_or(Codec::Webp);
    let animated = animation::is_animated_webp(webp) && variant.frame.is_none() && codec == Codec::Webp;
    let encoder = if codec == Codec::Avif { avif::BYTES_PER_PIXEL / 4 } else { 0 };
    source + (if animated { 4 } else { 2 } + encoder) * output
}

/// Decodes a catalogue body. When the rendition will be at most half as wide and half as high,
/// libwebp skips its in-loop deblocking filter and its smooth chroma upsampling: both refine
/// detail that such a downscale averages away, and skipping them makes the decode, most of a
/// render's time, a fifth faster (`dwebp -nofilter -nofancy`: 13 ms instead of 16 for a
/// 1920x1280 photo here).
fn decode(webp: &[u8], target: Option<(u32, u32)>) -> anyhow::Result<Pixels> {
    let mut config =
        WebPDecoderConfig::new().map_err(|()| anyhow!("libwebp refused its decoder configuration"))?;
    // SAFETY: reads `webp` and writes the features struct it is given.
    let status = unsafe { WebPGetFeatures(webp.as_ptr(), webp.len(), &mut config.input) };
    anyhow::ensure!(
        status == VP8StatusCode::VP8_STATUS_OK,
        "libwebp cannot read the encoded image ({status:?})"
    );
    let (width, height) = (config.input.width as u32, config.input.height as u32);
    let alpha = config.input.has_alpha != 0;
    let rough = target.is_some_and(|(w, h)| w * 2 <= width && h * 2 <= height);
    config.options.bypass_filtering = i32::from(rough);
    config.options.no_fancy_upsampling = i32::from(rough);
    let channels = if alpha { 4 } else { 3 };
    let mut data = vec![0u8; width as usize * height as usize * channels];
    config.output.colorspace = if alpha { WEBP_CSP_MODE::MODE_RGBA } else { WEBP_CSP_MODE::MODE_RGB };
    config.output.is_external_memory = 1;
    config.output.u.RGBA = WebPRGBABuffer {
        rgba: data.as_mut_ptr(),
        stride: (width as usize * channels) as i32,
        size: data.len(),
    };
    // SAFETY: libwebp writes at most `size` bytes, rows `stride` apart, into `data`, which outlives
    // the call; the free releases only memory libwebp allocated itself (none, with external memory).
    let status = unsafe {
        let status = WebPDecode(webp.as_ptr(), webp.len(), &mut config);
        WebPFreeDecBuffer(&mut config.output);
        status
    };
    anyhow::ensure!(
        status == VP8StatusCode::VP8_STATUS_OK,
        "libwebp cannot decode the encoded image ({status:?})"
    );
    Ok(Pixels { width, height, alpha, data })
}

/// The size of a `source_width` x `source_height` image fitted to `width` x `height` as `fit`
/// says: the size itself, except for `inside`, which keeps the aspect and never enlarges.
fn fitted(source_width: u32, source_height: u32, width: u32, height: u32, fit: Fit) -> (u32, u32) {
    match fit {
        Fit::Cover | Fit::Fill | Fit::Contain => (width, height),
        Fit::Inside => {
            let inner = scaled_inside(source_width, source_height, width, height);
            (inner.0.min(source_width), inner.1.min(source_height))
        }
    }
}

/// The largest size with the aspect of `source_width` x `source_height` inside `width` x `height`.
fn scaled_inside(source_width: u32, source_height: u32, width: u32, height: u32) -> (u32, u32) {
    let (sw, sh, w, h) =
        (u64::from(source_width), u64::from(source_height), u64::from(width), u64::from(height));
    if sw * h > w * sh {
        (width, ((sh * w + sw / 2) / sw).clamp(1, h) as u32)
    } else {
        (((sw * h + sh / 2) / sh).clamp(1, w) as u32, height)
    }
}

/// `pixels` scaled to `width` x `height` as `fit` says (see [`Fit`]), cropped as `crop` says
/// when they cover it.
fn resize(pixels: &Pixels, width: u32, height: u32, fit: Fit, crop: Crop) -> anyhow::Result<Pixels> {
    match fit {
        Fit::Cover => {
            let (left, top, w, h) = crop::window(pixels, width, height, crop)?;
            scale(pixels, width, height, Some((left, top, w, h)))
        }
        Fit::Fill => scale(pixels, width, height, None),
        Fit::Inside => {
            let (w, h) = fitted(pixels.width, pixels.height, width, height, Fit::Inside);
            if (w, h) == (pixels.width, pixels.height) {
                return Ok(pixels.clone());
            }
            scale(pixels, w, h, None)
        }
        Fit::Contain => {
            let (w, h) = scaled_inside(pixels.width, pixels.height, width, height);
            Ok(pad(&scale(pixels, w, h, None)?, width, height))
        }
    }
}

/// `pixels` (or the `window` of it) scaled to exactly `width` x `height`.
fn scale(pixels: &Pixels, width: u32, height: u32, window: Option<crop::Window>) -> anyhow::Result<Pixels> {
    let pixel_type = if pixels.alpha { PixelType::U8x4 } else { PixelType::U8x3 };
    let source = ImageRef::new(pixels.width, pixels.height, &pixels.data, pixel_type)
        .map_err(|e| anyhow!("cannot resize: {e}"))?;
    let mut target = ResizeImage::new(width, height, pixel_type);
    let mut options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Lanczos3));
    if let Some((left, top, w, h)) = window {
        options = options.crop(f64::from(left), f64::from(top), f64::from(w), f64::from(h));
    }
    Resizer::new().resize(&source, &mut target, &options).map_err(|e| anyhow!("cannot resize: {e}"))?;
    Ok(Pixels { width, height, alpha: pixels.alpha, data: target.into_vec() })
}

/// `pixels` centred on a transparent `width` x `height` canvas (as RGBA).
fn pad(pixels: &Pixels, width: u32, height: u32) -> Pixels {
    let (left, top) = ((width - pixels.width) / 2, (height - pixels.height) / 2);
    let mut data = vec![0u8; width as usize * height as usize * 4];
    let step = if pixels.alpha { 4 } else { 3 };
    for (y, row) in pixels.data.chunks_exact(pixels.width as usize * step).enumerate() {
        let start = ((top as usize + y) * width as usize + left as usize) * 4;
        for (x, px) in row.chunks_exact(step).enumerate() {
            let at = start + x * 4;
            data[at..at + 3].copy_from_slice(&px[..3]);
            data[at + 3] = if pixels.alpha { px[3] } else { 255 };
        }
    }
    Pixels { width, height, alpha: true, data }
}

/// Gaussian blur with sigma `amount` (1-10, as Lorem Picsum's `?blur`), approximated by three box
/// blurs (image's `fast_blur`, which extends the edges rather than darkening them).
fn blur(pixels: Pixels, amount: u8) -> anyhow::Result<Pixels> {
    let (width, height, sigma) = (pixels.width, pixels.height, f32::from(amount));
    let data = if pixels.alpha {
        let image =
            ImageBuffer::<Rgba<u8>, _>::from_raw(width, height, pixels.data).context("cannot blur")?;
        fast_blur(&image, sigma).into_raw()
    } else {
        let image = ImageBuffer::<Rgb<u8>, _>::from_raw(width, height, pixels.data).context("cannot blur")?;
        fast_blur(&image, sigma).into_raw()
    };
    Ok(Pixels { width, height, alpha: pixels.alpha, data })
}

/// Sets R = G = B to the pixel's luma (Rec. 709 weights), leaving alpha alone.
fn grayscale(pixels: &mut Pixels) {
    let step = if pixels.alpha { 4 } else { 3 };
    for px in pixels.data.chunks_exact_mut(step) {
        let y = luma(px[0], px[1], px[2]);
        px[..3].fill(y);
    }
}

fn luma(r: u8, g: u8, b: u8) -> u8 {
    ((2126 * u32::from(r) + 7152 * u32::from(g) + 722 * u32::from(b) + 5000) / 10_000) as u8
}

/// The image as `columns` characters per line, lines as many as keep its aspect in character
/// cells (at most [`MAX_ASCII_LINES`]); transparent pixels count as the light page behind them.
fn ascii(pixels: &Pixels, columns: u16) -> anyhow::Result<Vec<u8>> {
    let columns = u32::from(columns);
    let rows = ((f64::from(columns) * f64::from(pixels.height) / f64::from(pixels.width) / CELL_ASPECT)
        .round() as u32)
        .clamp(1, MAX_ASCII_LINES);
    let pixel_type = if pixels.alpha { PixelType::U8x4 } else { PixelType::U8x3 };
    let source = ImageRef::new(pixels.width, pixels.height, &pixels.data, pixel_type)
        .map_err(|e| anyhow!("cannot resize: {e}"))?;
    let mut grid = ResizeImage::new(columns, rows, pixel_type);
    let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Box));
    Resizer::new().resize(&source, &mut grid, &options).map_err(|e| anyhow!("cannot resize: {e}"))?;
    let step = if pixels.alpha { 4 } else { 3 };
    let mut text = Vec::with_capacity(((columns + 1) * rows) as usize);
    for row in grid.buffer().chunks_exact(columns as usize * step) {
        for px in row.chunks_exact(step) {
            let mut y = u32::from(luma(px[0], px[1], px[2]));
            if step == 4 {
                let a = u32::from(px[3]);
                y = (y * a + 255 * (255 - a)) / 255;
            }
            text.push(RAMP[y as usize * RAMP.len() / 256]);
        }
        text.push(b'\n');
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::library::encode::WebpMode;

    fn go_on() -> Result<(), std::fmt::Error> {
        Ok(())
    }

    const LOSSLESS: Settings =
        Settings { mode: WebpMode::Lossless, max_side: 0, animation: crate::library::encode::TEST_BUDGET };

    /// A lossless WebP of `width` x `height`: a red-green gradient, blue 40.
    fn gradient(width: u32, height: u32) -> Vec<u8> {
        let data = (0..height)
            .flat_map(|y| {
                (0..width).flat_map(move |x| [(x * 255 / width) as u8, (y * 255 / height) as u8, 40])
            })
            .collect();
        encode(
            &Pixels { width, height, alpha: false, data },
            Encoding { quality: None, max_side: 0, animation: None },
        )
        .unwrap()
    }

    fn decoded(output: Output) -> webp::WebPImage {
        let Output::Picture(_, bytes) = output else { panic!("expected WebP") };
        webp::Decoder::new(&bytes).decode().unwrap()
    }

    fn variant(form: Form, grayscale: bool, blur: u8) -> Variant {
        Variant { grayscale, blur, ..Variant::of(form) }
    }

    #[test]
    fn sizes_are_exact_whatever_the_aspect() {
        let source = gradient(64, 32);
        for (w, h) in [(16, 16), (10, 40), (64, 32), (200, 3), (1, 1)] {
            let out = decoded(
                render(&source, &variant(Form::Picture(Some((w, h))), false, 0), LOSSLESS, &go_on).unwrap(),
            );
            assert_eq!((out.width(), out.height()), (u32::from(w), u32::from(h)), "{w}x{h}");
        }
    }

    #[test]
    fn fits_give_the_documented_sizes() {
        let source = gradient(64, 32);
        let sized = |fit, w, h| {
            let v = Variant { fit, ..variant(Form::Picture(Some((w, h))), false, 0) };
            let out = decoded(render(&source, &v, LOSSLESS, &go_on).unwrap());
            (out.width(), out.height(), out.is_alpha())
        };
        assert_eq!(sized(Fit::Inside, 32, 32), (32, 16, false), "inside keeps the aspect");
        assert_eq!(sized(Fit::Inside, 640, 640), (64, 32, false), "inside never enlarges");
        assert_eq!(sized(Fit::Fill, 10, 40), (10, 40, false));
        assert_eq!(sized(Fit::Cover, 10, 40), (10, 40, false));
        assert_eq!(sized(Fit::Contain, 40, 40), (40, 40, true), "contain pads with transparency");
        let v = Variant { fit: Fit::Contain, ..variant(Form::Picture(Some((40, 40))), false, 0) };
        let padded = decoded(render(&source, &v, LOSSLESS, &go_on).unwrap());
        assert_eq!(padded[3], 0, "the top row is padding");
        assert_eq!(padded[(20 * 40 + 20) * 4 + 3], 255, "the middle is the image");
    }

    #[test]
    fn avif_and_jpeg_renditions_decode_to_their_size() {
        let source = gradient(64, 32);
        for (codec, magic) in [(Codec::Avif, &b"ftypavif"[..]), (Codec::Jpeg, &[0xFF, 0xD8][..])] {
            let v = Variant {
                codec: Some(codec),
                quality: Some(70),
                ..variant(Form::Picture(Some((20, 12))), true, 0)
            };
            let Output::Picture(made, bytes) = render(&source, &v, LOSSLESS, &go_on).unwrap() else {
                panic!()
            };
            assert_eq!(made, codec);
            let at = if codec == Codec::Avif { 4 } else { 0 };
            assert_eq!(&bytes[at..at + magic.len()], magic, "{codec:?}");
            let size = imagesize::blob_size(&bytes).unwrap();
            assert_eq!((size.width, size.height), (20, 12), "{codec:?}");
        }
        let still = Variant { codec: Some(Codec::Jpeg), ..variant(Form::Picture(None), false, 0) };
        let Output::Picture(Codec::Jpeg, _) = render(&animation(), &still, LOSSLESS, &go_on).unwrap() else {
            panic!("an animation asked for as JPEG is a still JPEG")
        };
    }

    #[test]
    fn grayscale_makes_every_channel_equal_and_blur_smooths() {
        let source = gradient(48, 48);
        let gray =
            decoded(render(&source, &variant(Form::Picture(None), true, 0), LOSSLESS, &go_on).unwrap());
        assert!(gray.chunks(3).all(|p| p[0] == p[1] && p[1] == p[2]));
        let plain =
            decoded(render(&source, &variant(Form::Picture(None), false, 0), LOSSLESS, &go_on).unwrap());
        let blurred =
            decoded(render(&source, &variant(Form::Picture(None), false, 5), LOSSLESS, &go_on).unwrap());
        assert_ne!(&*plain, &*blurred);
    }

    #[test]
    fn blur_keeps_a_flat_image_flat_at_any_size() {
        for (w, h) in [(1, 1), (2, 7), (7, 2), (8, 9), (13, 33), (39, 8)] {
            for sigma in [1, 5, 10] {
                let flat =
                    Pixels { width: w, height: h, alpha: false, data: vec![100; (w * h * 3) as usize] };
                let out = blur(flat, sigma).unwrap();
                assert!(out.data.iter().all(|&v| v == 100), "{w}x{h} sigma {sigma}: edges must not darken");
            }
        }
    }

    /// A 6x4 animation of three frames, 100 ms each, each a flat colour.
    fn animation() -> Vec<u8> {
        let encoding = Encoding { quality: None, max_side: 0, animation: None };
        let mut encoder = animation::Encoder::new(6, 4, encoding, 0).unwrap();
        for (n, colour) in [[200, 0, 0, 255], [0, 200, 0, 255], [0, 0, 200, 255]].iter().enumerate() {
            encoder.add(&colour.repeat(24), n as i32 * 100).unwrap();
        }
        encoder.finish(300).unwrap()
    }

    fn frames_of(webp: &[u8]) -> Vec<(u32, u32, [u8; 4], i32)> {
        let mut frames = WebpFrames::new(webp).unwrap();
        let (w, h) = (frames.width, frames.height);
        let mut out = Vec::new();
        while let Some((rgba, start)) = frames.next_frame().unwrap() {
            out.push((w, h, rgba[..4].try_into().unwrap(), start));
        }
        out
    }

    #[test]
    fn renditions_of_an_animation_are_animated_with_its_timing_or_a_still_frame_when_asked() {
        let source = animation();
        let render = |variant: Variant| match super::render(&source, &variant, LOSSLESS, &go_on).unwrap() {
            Output::Picture(_, bytes) => bytes,
            Output::Text(_) => panic!("text"),
        };
        let sized = render(variant(Form::Picture(Some((3, 2))), false, 0));
        assert_eq!(
            frames_of(&sized),
            [(3, 2, [200, 0, 0, 255], 0), (3, 2, [0, 200, 0, 255], 100), (3, 2, [0, 0, 200, 255], 200)]
        );
        let grey = frames_of(&render(variant(Form::Picture(None), true, 0)));
        assert_eq!(grey.len(), 3);
        assert!(grey.iter().all(|f| f.2[0] == f.2[1] && f.2[1] == f.2[2]), "{grey:?}");
        let still = render(Variant { frame: Some(1), ..variant(Form::Picture(Some((3, 2))), false, 0) });
        assert!(!animation::is_animated_webp(&still));
        let decoded = webp::Decoder::new(&still).decode().unwrap();
        assert_eq!(
            (decoded.width(), decoded.height(), &decoded[..3]),
            (3, 2, &[0, 200, 0][..]),
            "frame 1, green"
        );
        let past = Settings {
            animation: crate::library::encode::Budget { frames: 100, pixels: 3 * 6 * 4 - 1 },
            ..LOSSLESS
        };
        let Output::Picture(_, first) =
            super::render(&source, &variant(Form::Picture(None), false, 0), past, &go_on).unwrap()
        else {
            panic!()
        };
        assert!(!animation::is_animated_webp(&first), "past the budget at this size: a still");
    }

    #[test]
    fn ascii_art_of_a_very_tall_image_has_at_most_the_line_cap() {
        let tall = Pixels { width: 16, height: 16_000, alpha: false, data: vec![128; 16 * 16_000 * 3] };
        let text = ascii(&tall, 400).unwrap();
        assert_eq!(text.iter().filter(|&&b| b == b'\n').count(), MAX_ASCII_LINES as usize);
        assert_eq!(text.len(), 401 * MAX_ASCII_LINES as usize);
    }

    #[test]
    fn ascii_art_keeps_the_width_and_the_aspect() {
        let source = gradient(100, 50);
        let Output::Text(text) =
            render(&source, &variant(Form::Ascii(40), false, 0), LOSSLESS, &go_on).unwrap()
        else {
            panic!("expected text")
        };
        let lines: Vec<&[u8]> = text.split(|&b| b == b'\n').filter(|l| !l.is_empty()).collect();
        assert_eq!(lines.len(), 10, "40 columns of a 2:1 image in 2:1 cells");
        assert!(lines.iter().all(|l| l.len() == 40 && l.iter().all(|c| RAMP.contains(c))));
        assert_ne!(lines[0][0], lines[9][39], "dark and light corners differ");
    }

    #[test]
    fn a_render_no_longer_wanted_stops_at_the_next_stage() {
        let source = gradient(64, 32);
        let stop = || Err(std::fmt::Error);
        let err =
            render(&source, &variant(Form::Picture(Some((8, 8))), false, 3), LOSSLESS, &stop).err().unwrap();
        assert!(err.is::<std::fmt::Error>(), "{err:#}");
    }

    #[test]
    fn a_body_that_is_not_webp_is_an_error() {
        assert!(render(b"not webp", &variant(Form::Picture(None), false, 0), LOSSLESS, &go_on).is_err());
    }
}
