//! What a rendition is, as a value: the form (a picture at a size, or ASCII art), how a size is
//! filled (fit and crop), the effects, the output format and quality, and the limits every
//! accepted spec keeps. The router parses URLs into it, the render threads make
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

/// `?dpr`: the largest device pixel ratio, which multiplies a size.
pub const MAX_DPR: u32 = 4;

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
    /// The format the URL fixed (an extension or `?format=`); None: the one the client's
    /// `Accept` prefers, chosen per request before the rendition is looked up.
    pub codec: Option<Codec>,
    /// `?q=`: the encoder's quality for this rendition; None: the server's setting.
    pub quality: Option<u8>,
    pub fit: Fit,
    pub crop: Crop,
}

impl Variant {
    /// `form` with no effect, in the negotiated format, covering its size from the centre.
    pub const fn of(form: Form) -> Variant {
        Variant {
            form,
            grayscale: false,
            blur: 0,
            frame: None,
            codec: None,
            quality: None,
            fit: Fit::Cover,
            crop: Crop::Centre,
        }
    }

    /// The whole image in `codec`, and nothing else changed: what the library may have encoded
    /// already.
    pub fn is_whole(&self, codec: Codec) -> bool {
        *self == Variant { codec: Some(codec), ..Variant::of(Form::Picture(None)) }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Form {
    /// A picture at this size (filled as [`Fit`] says), or at the source's size.
    Picture(Option<(u16, u16)>),
    /// Text art this many characters wide.
    Ascii(u16),
}

/// The image formats keiko sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, enum_map::Enum)]
pub enum Codec {
    Webp,
    Avif,
    Jpeg,
}

impl Codec {
    /// From a URL's extension or `?format=` value.
    pub fn named(name: &[u8]) -> Option<Codec> {
        match name {
            b"webp" => Some(Codec::Webp),
            b"avif" => Some(Codec::Avif),
            b"jpg" | b"jpeg" => Some(Codec::Jpeg),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Codec::Webp => "webp",
            Codec::Avif => "avif",
            Codec::Jpeg => "jpeg",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Codec::Webp => "image/webp",
            Codec::Avif => "image/avif",
            Codec::Jpeg => "image/jpeg",
        }
    }
}

/// `?fit=`: how a picture fills the size asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fit {
    /// Scaled to cover the size and cropped to it (see [`Crop`]); small images are enlarged.
    Cover,
    /// Scaled to fit inside the size and centred on it; the rest is transparent (white in JPEG).
    Contain,
    /// Scaled to fit inside the size, keeping the aspect, never enlarged: the size is at most
    /// what was asked for.
    Inside,
    /// Stretched to exactly the size.
    Fill,
}

/// `?crop=`: which part of the image a [`Fit::Cover`] keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Crop {
    Centre,
    /// The part with the most detail (Shannon entropy of its luma), as libvips' `entropy`.
    Entropy,
    /// The part a viewer looks at first: edges, saturated colour and skin tones, as libvips'
    /// `attention`.
    Attention,
}
