//! Animated GIF and WebP, kept animated: frames are read one composited canvas at a time and fed
//! to libwebp's animation encoder as they come, so memory holds a canvas or two and the output,
//! never every frame. A documented budget (frames, and pixels summed over frames) bounds the work;
//! past it the caller serves the first frame as a still, with a warning.
//!
//! GIF frames come composited (disposal and transparency applied) from the image crate's GIF
//! decoder; WebP frames from libwebp's own animation decoder, which renditions also use to read an
//! animated catalogue body. The wrappers below are thin: libwebp does the work; they own its
//! pointers so that every early return frees them.

use std::ptr;

use anyhow::{anyhow, bail, Context};
use image::AnimationDecoder;
use libwebp_sys as webp;

use super::decode::{Format, METADATA_BUDGET};
use super::encode::{downscaled, webp_config, Budget, Encoding};
use super::pixels::Pixels;

/// What [`encode`] made of a file.
pub(crate) enum Animation {
    /// An animated WebP.
    Encoded(Vec<u8>),
    /// One frame, or a format that does not animate: encode it as a still.
    Still,
    /// More than the budget allows: serve the first frame as a still; the reason for the log.
    PastBudget(String),
}

/// An animated GIF or WebP source as an animated WebP, within the encoding's animation budget
/// and `max_pixels` a frame; frames are downscaled as a still would be (`--max-side`, WebP's
/// limit).
pub(crate) fn encode(
    bytes: &[u8],
    format: Format,
    encoding: Encoding,
    max_pixels: u64,
) -> anyhow::Result<Animation> {
    let Some(budget) = encoding.animation else { return Ok(Animation::Still) };
    match format {
        Format::Gif => encode_gif(bytes, encoding, budget, max_pixels),
        Format::WebpLossless | Format::WebpLossy if is_animated_webp(bytes) => {
            let mut frames = WebpFrames::new(bytes)?;
            let (width, height, count) = (frames.width, frames.height, frames.count);
            if count < 2 {
                return Ok(Animation::Still);
            }
            if !budget.allows(u64::from(count), width, height) {
                return Ok(Animation::PastBudget(past(count.into(), true, width, height, budget)));
            }
            let mut sink = Sink::new(encoding, frames.loop_count);
            while let Some((rgba, timestamp)) = frames.next_frame()? {
                sink.add(rgba, width, height, timestamp)?;
            }
            Ok(Animation::Encoded(sink.finish(frames.last_timestamp)?))
        }
        _ => Ok(Animation::Still),
    }
}

/// An encoder made on the first frame, at that frame's size after downscaling.
struct Sink {
    encoding: Encoding,
    loop_count: u32,
    encoder: Option<Encoder>,
}

impl Sink {
    fn new(encoding: Encoding, loop_count: u32) -> Sink {
        Sink { encoding, loop_count, encoder: None }
    }

    fn add(&mut self, rgba: &[u8], width: u32, height: u32, timestamp: i32) -> anyhow::Result<()> {
        let frame = Pixels { width, height, alpha: true, data: rgba.to_vec() };
        let frame = downscaled(&frame, self.encoding.max_side)?.unwrap_or(frame);
        let encoder = match &mut self.encoder {
            Some(encoder) => encoder,
            None => {
                self.encoder.insert(Encoder::new(frame.width, frame.height, self.encoding, self.loop_count)?)
            }
        };
        encoder.add(&frame.data, timestamp)
    }

    fn finish(self, end: i32) -> anyhow::Result<Vec<u8>> {
        self.encoder.context("an animation without frames")?.finish(end)
    }
}

/// Why an animation is served as a still; `counted_all` says whether `frames` is all of them or
/// where counting stopped.
fn past(frames: u64, counted_all: bool, width: u32, height: u32, budget: Budget) -> String {
    format!(
        "an animation of {frames}{} frames of {width}x{height} is past the budget of {}: its first frame is served",
        if counted_all { "" } else { " or more" },
        budget.describe()
    )
}

/// How many frames a WebP file holds (1 for a still), from its chunk headers alone: libwebp's
/// demuxer reads no pixels and allocates no canvas.
pub(crate) fn frame_count(bytes: &[u8]) -> u32 {
    if !is_animated_webp(bytes) {
        return 1;
    }
    let data = webp::WebPData { bytes: bytes.as_ptr(), size: bytes.len() };
    // SAFETY: `bytes` outlives the demuxer, which is deleted before returning.
    unsafe {
        let demuxer = webp::WebPDemuxInternal(&data, 0, ptr::null_mut(), webp::WEBP_DEMUX_ABI_VERSION as _);
        if demuxer.is_null() {
            return 1;
        }
        let frames = webp::WebPDemuxGetI(demuxer, webp::WebPFormatFeature::WEBP_FF_FRAME_COUNT);
        webp::WebPDemuxDelete(demuxer);
        frames.max(1)
    }
}

/// Whether a WebP file is an animation (an extended file with an `ANIM` chunk).
pub(crate) fn is_animated_webp(bytes: &[u8]) -> bool {
    // VP8X flags: bit 1 (0x02) is "animation".
    bytes.len() > 20 && &bytes[12..16] == b"VP8X" && bytes[20] & 0x02 != 0
}

fn encode_gif(
    bytes: &[u8],
    encoding: Encoding,
    budget: Budget,
    max_pixels: u64,
) -> anyhow::Result<Animation> {
    // Count the frames first, without decoding their pixels: a still needs no encoder, and an
    // animation past the budget costs nothing more.
    let mut options = gif::DecodeOptions::new();
    options.skip_frame_decoding(true);
    let mut reader = options.read_info(bytes)?;
    let (width, height) = (u32::from(reader.width()), u32::from(reader.height()));
    let mut count = 0u64;
    while reader.read_next_frame()?.is_some() {
        count += 1;
        if !budget.allows(count, width, height) {
            return Ok(Animation::PastBudget(past(count, false, width, height, budget)));
        }
    }
    // The loop count is known once the application extension that holds it has been read.
    let loop_count = match reader.repeat() {
        gif::Repeat::Infinite => 0,
        gif::Repeat::Finite(n) => u32::from(n).max(1),
    };
    if count < 2 {
        return Ok(Animation::Still);
    }
    let mut decoder = image::codecs::gif::GifDecoder::new(std::io::Cursor::new(bytes))?;
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(max_pixels.saturating_mul(8).saturating_add(METADATA_BUDGET));
    image::ImageDecoder::set_limits(&mut decoder, limits)?;
    let mut sink = Sink::new(encoding, loop_count);
    let mut timestamp = 0i32;
    for frame in decoder.into_frames() {
        let frame = frame?;
        let (numerator, denominator) = frame.delay().numer_denom_ms();
        let duration = (numerator / denominator.max(1)) as i32;
        let canvas = frame.into_buffer();
        sink.add(canvas.as_raw(), canvas.width(), canvas.height(), timestamp)?;
        timestamp = timestamp.saturating_add(duration);
    }
    Ok(Animation::Encoded(sink.finish(timestamp)?))
}

/// libwebp's animation encoder, fed one RGBA canvas at a time.
pub(crate) struct Encoder {
    encoder: *mut webp::WebPAnimEncoder,
    config: webp::WebPConfig,
    width: u32,
    height: u32,
}

impl Encoder {
    /// `loop_count` 0 loops for ever.
    pub(crate) fn new(
        width: u32,
        height: u32,
        encoding: Encoding,
        loop_count: u32,
    ) -> anyhow::Result<Encoder> {
        let config = webp_config(encoding.quality)?;
        let mut options = std::mem::MaybeUninit::<webp::WebPAnimEncoderOptions>::uninit();
        // SAFETY: initialises the options struct it is given.
        let ok = unsafe {
            webp::WebPAnimEncoderOptionsInitInternal(options.as_mut_ptr(), webp::WEBP_MUX_ABI_VERSION as _)
        };
        anyhow::ensure!(ok != 0, "libwebp refused its animation options");
        // SAFETY: initialised just above.
        let mut options = unsafe { options.assume_init() };
        options.anim_params.loop_count = i32::try_from(loop_count).unwrap_or(0);
        options.anim_params.bgcolor = 0;
        // SAFETY: the options outlive the call; a null return is handled.
        let encoder = unsafe {
            webp::WebPAnimEncoderNewInternal(
                width as i32,
                height as i32,
                &options,
                webp::WEBP_MUX_ABI_VERSION as _,
            )
        };
        anyhow::ensure!(!encoder.is_null(), "libwebp cannot make a {width}x{height} animation");
        Ok(Encoder { encoder, config, width, height })
    }

    /// Adds a frame (RGBA, the canvas's size) shown from `timestamp` ms.
    pub(crate) fn add(&mut self, rgba: &[u8], timestamp: i32) -> anyhow::Result<()> {
        anyhow::ensure!(
            rgba.len() == self.width as usize * self.height as usize * 4,
            "a frame of the wrong size"
        );
        let mut picture = webp::WebPPicture::new().map_err(|()| anyhow!("libwebp refused a picture"))?;
        picture.use_argb = 1;
        picture.width = self.width as i32;
        picture.height = self.height as i32;
        // SAFETY: `rgba` holds width x height RGBA pixels; the picture copies them and is freed
        // below whatever happens.
        let added = unsafe {
            let imported = webp::WebPPictureImportRGBA(&mut picture, rgba.as_ptr(), self.width as i32 * 4);
            let added = imported != 0
                && webp::WebPAnimEncoderAdd(self.encoder, &mut picture, timestamp, &self.config) != 0;
            webp::WebPPictureFree(&mut picture);
            added
        };
        if !added {
            bail!("libwebp failed to add a frame: {}", self.error());
        }
        Ok(())
    }

    /// The animation, its last frame shown until `end` ms.
    pub(crate) fn finish(self, end: i32) -> anyhow::Result<Vec<u8>> {
        let mut data = webp::WebPData::default();
        // SAFETY: a null frame marks the end; `data` receives libwebp's buffer, copied and freed.
        unsafe {
            if webp::WebPAnimEncoderAdd(self.encoder, ptr::null_mut(), end, ptr::null()) == 0
                || webp::WebPAnimEncoderAssemble(self.encoder, &mut data) == 0
            {
                bail!("libwebp failed to assemble the animation: {}", self.error());
            }
            let bytes = std::slice::from_raw_parts(data.bytes, data.size).to_vec();
            webp::WebPDataClear(&mut data);
            Ok(bytes)
        }
    }

    fn error(&self) -> String {
        // SAFETY: libwebp returns a static or encoder-owned C string, or null.
        let message = unsafe { webp::WebPAnimEncoderGetError(self.encoder) };
        if message.is_null() {
            return "no reason given".into();
        }
        // SAFETY: checked non-null; valid while the encoder lives.
        unsafe { std::ffi::CStr::from_ptr(message) }.to_string_lossy().into_owned()
    }
}

impl Drop for Encoder {
    fn drop(&mut self) {
        // SAFETY: the encoder was made by WebPAnimEncoderNew and is deleted once.
        unsafe { webp::WebPAnimEncoderDelete(self.encoder) };
    }
}

/// libwebp's animation decoder: the frames of an animated WebP as composited RGBA canvases.
pub(crate) struct WebpFrames<'a> {
    decoder: *mut webp::WebPAnimDecoder,
    pub(crate) width: u32,
    pub(crate) height: u32,
    pub(crate) count: u32,
    pub(crate) loop_count: u32,
    /// When the last frame read stops being shown, in ms.
    pub(crate) last_timestamp: i32,
    _bytes: std::marker::PhantomData<&'a [u8]>,
}

impl<'a> WebpFrames<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> anyhow::Result<WebpFrames<'a>> {
        let data = webp::WebPData { bytes: bytes.as_ptr(), size: bytes.len() };
        let mut options = std::mem::MaybeUninit::<webp::WebPAnimDecoderOptions>::uninit();
        // SAFETY: initialises the options; `bytes` outlives the decoder (the lifetime says so).
        let decoder = unsafe {
            if webp::WebPAnimDecoderOptionsInit(options.as_mut_ptr()) == 0 {
                bail!("libwebp refused its animation decoder options");
            }
            let mut options = options.assume_init();
            options.color_mode = webp::WEBP_CSP_MODE::MODE_RGBA;
            options.use_threads = 0;
            webp::WebPAnimDecoderNew(&data, &options)
        };
        anyhow::ensure!(!decoder.is_null(), "libwebp cannot read the animation");
        let mut info = webp::WebPAnimInfo::default();
        let mut frames = WebpFrames {
            decoder,
            width: 0,
            height: 0,
            count: 0,
            loop_count: 0,
            last_timestamp: 0,
            _bytes: std::marker::PhantomData,
        };
        // SAFETY: the decoder is valid; `info` is written.
        let ok = unsafe { webp::WebPAnimDecoderGetInfo(decoder, &mut info) };
        anyhow::ensure!(ok != 0, "libwebp cannot read the animation's header");
        (frames.width, frames.height, frames.count, frames.loop_count) =
            (info.canvas_width, info.canvas_height, info.frame_count, info.loop_count);
        Ok(frames)
    }

    /// The next composited canvas (RGBA, valid until the next call) and when it starts, in ms.
    pub(crate) fn next_frame(&mut self) -> anyhow::Result<Option<(&[u8], i32)>> {
        // SAFETY: the decoder is valid; the buffer it returns is width x height x 4 bytes and
        // stays valid until the next call, which the borrow of `self` ensures.
        unsafe {
            if webp::WebPAnimDecoderHasMoreFrames(self.decoder) == 0 {
                return Ok(None);
            }
            let (mut buffer, mut end) = (ptr::null_mut(), 0);
            if webp::WebPAnimDecoderGetNext(self.decoder, &mut buffer, &mut end) == 0 || buffer.is_null() {
                bail!("a damaged animation: libwebp cannot decode one of its frames");
            }
            let start = self.last_timestamp;
            self.last_timestamp = end;
            let len = self.width as usize * self.height as usize * 4;
            Ok(Some((std::slice::from_raw_parts(buffer, len), start)))
        }
    }

    /// The composited canvas of frame `index` (0-based), or the last one when there are fewer.
    pub(crate) fn frame(mut self, index: usize) -> anyhow::Result<Vec<u8>> {
        let mut last = None;
        for _ in 0..=index {
            match self.next_frame()? {
                Some((rgba, _)) => last = Some(rgba.to_vec()),
                None => break,
            }
        }
        last.context("an animation without frames")
    }
}

impl Drop for WebpFrames<'_> {
    fn drop(&mut self) {
        // SAFETY: made by WebPAnimDecoderNew, deleted once.
        unsafe { webp::WebPAnimDecoderDelete(self.decoder) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::library::encode::TEST_BUDGET;

    const LOSSLESS: Encoding = Encoding { quality: None, max_side: 0, animation: Some(TEST_BUDGET) };

    /// A 4x3 GIF of `delays.len()` frames (delays in hundredths of a second), each frame a
    /// 2x2 square of palette colour `n % 3` at (n % 3, 1) over what the frames before it left.
    fn gif(delays: &[u16], repeat: gif::Repeat) -> Vec<u8> {
        let mut out = Vec::new();
        {
            let mut encoder = gif::Encoder::new(&mut out, 4, 3, &[255, 0, 0, 0, 255, 0, 0, 0, 255]).unwrap();
            encoder.set_repeat(repeat).unwrap();
            for (n, &delay) in delays.iter().enumerate() {
                let (left, colour) = ((n % 3) as u16, (n % 3) as u8);
                let frame = gif::Frame {
                    left,
                    top: 1,
                    width: 2,
                    height: 2,
                    delay,
                    buffer: std::borrow::Cow::Owned(vec![colour; 4]),
                    ..Default::default()
                };
                encoder.write_frame(&frame).unwrap();
            }
        }
        out
    }

    /// Every frame of an animated WebP: (its canvas, start ms), and the loop count.
    fn frames(webp: &[u8]) -> (Vec<(Vec<u8>, i32)>, u32) {
        let mut frames = WebpFrames::new(webp).unwrap();
        let mut all = Vec::new();
        while let Some((rgba, start)) = frames.next_frame().unwrap() {
            all.push((rgba.to_vec(), start));
        }
        all.push((Vec::new(), frames.last_timestamp));
        (all, frames.loop_count)
    }

    #[test]
    fn an_animated_gif_keeps_its_frames_timing_and_loop_count() {
        let source = gif(&[10, 20, 5], gif::Repeat::Finite(3));
        let Animation::Encoded(webp) = encode(&source, Format::Gif, LOSSLESS, 1 << 20).unwrap() else {
            panic!("not animated")
        };
        assert!(is_animated_webp(&webp));
        assert_eq!(frame_count(&webp), 3);
        let (frames, loops) = frames(&webp);
        let starts: Vec<i32> = frames.iter().map(|f| f.1).collect();
        assert_eq!(starts, [0, 100, 300, 350], "starts, then the end of the last frame");
        assert_eq!(loops, 3);
        let pixel = |canvas: &[u8], x: usize, y: usize| canvas[(y * 4 + x) * 4..][..4].to_vec();
        assert_eq!(pixel(&frames[0].0, 0, 1), [255, 0, 0, 255], "frame 1 drew red at x 0");
        assert_eq!(pixel(&frames[0].0, 3, 0), [0, 0, 0, 0], "outside it, transparent");
        assert_eq!(pixel(&frames[1].0, 0, 1), [255, 0, 0, 255], "kept under frame 2");
        assert_eq!(pixel(&frames[1].0, 2, 2), [0, 255, 0, 255], "frame 2 drew green at x 1-2");
        assert_eq!(pixel(&frames[2].0, 3, 1), [0, 0, 255, 255], "frame 3 drew blue at x 2-3");
    }

    #[test]
    fn a_still_gif_and_a_still_webp_are_not_animations() {
        assert!(matches!(
            encode(&gif(&[10], gif::Repeat::Infinite), Format::Gif, LOSSLESS, 1 << 20),
            Ok(Animation::Still)
        ));
        let still = ::webp::Encoder::from_rgb(&[1, 2, 3], 1, 1).encode_lossless().to_vec();
        assert!(matches!(encode(&still, Format::WebpLossless, LOSSLESS, 1 << 20), Ok(Animation::Still)));
    }

    #[test]
    fn an_animation_past_its_budget_is_refused_before_its_frames_are_decoded() {
        let source = gif(&[10; 5], gif::Repeat::Infinite);
        let few = Encoding { animation: Some(Budget { frames: 4, pixels: 1_000 }), ..LOSSLESS };
        let Animation::PastBudget(why) = encode(&source, Format::Gif, few, 1 << 20).unwrap() else {
            panic!()
        };
        assert!(why.contains("5 or more frames of 4x3") && why.contains("KEIKO_ANIMATION_FRAMES"), "{why}");
        let small = Encoding { animation: Some(Budget { frames: 100, pixels: 4 * 3 * 4 }), ..LOSSLESS };
        assert!(matches!(encode(&source, Format::Gif, small, 1 << 20), Ok(Animation::PastBudget(_))));
    }

    #[test]
    fn an_animated_webp_source_is_encoded_again_with_its_frames() {
        let Animation::Encoded(first) =
            encode(&gif(&[10, 10, 10, 10], gif::Repeat::Infinite), Format::Gif, LOSSLESS, 1 << 20).unwrap()
        else {
            panic!()
        };
        let Animation::Encoded(again) = encode(&first, Format::WebpLossless, LOSSLESS, 1 << 20).unwrap()
        else {
            panic!("an animated WebP stays animated")
        };
        assert_eq!(frames(&again), frames(&first));
        let few = Encoding { animation: Some(Budget { frames: 3, pixels: 1_000 }), ..LOSSLESS };
        assert!(matches!(encode(&first, Format::WebpLossless, few, 1 << 20), Ok(Animation::PastBudget(_))));
    }
}
