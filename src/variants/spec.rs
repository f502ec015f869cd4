//! What a rendition is, as a value: the form (a WebP at a size, or ASCII art), the effects, and
//! the limits every accepted spec keeps. The router parses URLs into it, the render threads make
//! it, and it keys the caches; it lives here, with the renditions, because that is what it
//! describes.

/// Longest side of a rendered image, in pixels.
pub const MAX_SIDE: u32 = 5000;
/// `?blur` without a value.
pub const DEFAULT_BLUR: u8 = 5;
/// Largest Gaussian blur sigma.
pub const MAX_BLUR: u8 = 10;
/// ASCII renditions: characters per line, by default and at most.
pub const DEFAULT_ASCII_WIDTH: u16 = 80;
pub const ASCII_WIDTHS: std::ops::RangeInclusive<u16> = 8..=400;
/// ASCII renditions: lines at most. A very tall image is squeezed to fit rather than sending
/// megabytes of text (a 16 x 16,000 image at 400 columns would be 200,000 lines).
pub const MAX_ASCII_LINES: u32 = 400;

/// `?frame=N`: the largest frame index asked for (an animation has at most
/// `--animation-frames`, and past its last frame the last one is given).
pub const MAX_FRAME: u16 = 9_999;

/// A rendition of an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Variant {
    pub form: Form,
    pub grayscale: bool,
    /// Gaussian blur sigma, 0 for none.
    pub blur: u8,
    /// A still of this frame (0 first) of an animation; None keeps an animation animated. A
    /// still image is its own only frame.
    pub frame: Option<u16>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Form {
    /// WebP, scaled and centre-cropped to exactly this size, or at the source's size.
    Webp(Option<(u16, u16)>),
    /// Text art this many characters wide.
    Ascii(u16),
}
