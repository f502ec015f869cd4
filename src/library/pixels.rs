//! The one layout every decoder ends in and the WebP encoder takes: interleaved 8-bit RGB, or RGBA
//! when some pixel is not fully opaque. A module of its own so that the decoders and the steps
//! after them (`develop`, `encode`, the renders) share it without importing one another.

/// Decoded pixels, rows top to bottom, `alpha` telling whether each pixel has 4 bytes or 3.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pixels {
    pub(crate) width: u32,
    pub(crate) height: u32,
    pub(crate) alpha: bool,
    pub(crate) data: Vec<u8>,
}

impl Pixels {
    /// Opaque pixels from interleaved 8-bit RGB rows (`data` of `width * height * 3` bytes).
    pub fn rgb(width: u32, height: u32, data: Vec<u8>) -> Pixels {
        debug_assert_eq!(data.len(), width as usize * height as usize * 3);
        Pixels { width, height, alpha: false, data }
    }
}
