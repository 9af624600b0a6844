//! The PNG path's drawing surface: plotters' RGB bitmap backend, with text drawn from a
//! cache of rasterised glyphs instead of rasterising every glyph outline on every graph.
//!
//! plotters' `ab_glyph` text path rasterises the outline of each character each time
//! it is drawn or measured, and a graph draws about 150 characters (title, axis labels,
//! legend); that was the largest share of a graph's CPU time. Glyphs are positioned at
//! whole pixels there (no sub-pixel offsets), so a glyph's coverage depends only on the
//! font, the size and the character, and can be kept. [`Surface::draw_text`] repeats
//! plotters' placement (advances, kerning, anchors, rotation, clipping) and blending
//! exactly, so the pixels are the same as plotters draws them (`tests::text_pixels_*`).
//!
//! The cache is bounded ([`MAX_GLYPHS`]): sizes follow the graph height, so odd heights
//! asked for with `ht` add sizes; past the bound it is emptied and refilled.

use std::collections::HashMap;
use std::sync::{OnceLock, RwLock};

use ab_glyph::{Font, FontRef, ScaleFont};
use plotters::prelude::BitMapBackend;
use plotters_backend::text_anchor::{HPos, VPos};
use plotters_backend::{
    BackendColor, BackendCoord, BackendStyle, BackendTextStyle, DrawingBackend, DrawingErrorKind, FontStyle,
};

/// Glyphs (one character at one size and weight) kept at most; a graph uses about 60.
pub const MAX_GLYPHS: usize = 4096;

/// The font family name text is drawn with (registered with plotters for SVG).
pub const FONT: &str = "sans-serif";

fn face(bold: bool) -> &'static FontRef<'static> {
    static REGULAR: OnceLock<FontRef<'static>> = OnceLock::new();
    static BOLD: OnceLock<FontRef<'static>> = OnceLock::new();
    // The bytes are a valid TrueType font compiled in; a failure would be a broken build.
    if bold {
        BOLD.get_or_init(|| {
            FontRef::try_from_slice(dejavu::sans::bold()).expect("the embedded DejaVu Sans Bold is valid")
        })
    } else {
        REGULAR.get_or_init(|| {
            FontRef::try_from_slice(dejavu::sans::regular()).expect("the embedded DejaVu Sans is valid")
        })
    }
}

/// One character at one size: its advance and its coverage, as plotters draws it.
struct Glyph {
    advance: f32,
    /// Row offset plotters gives the glyph: `(size / 2 + top of its pixel bounds) as i32`.
    y_shift: i32,
    /// `(x, y, coverage)` in the order the rasteriser reports them, without the
    /// uncovered pixels (drawing those changes nothing).
    pixels: Box<[(i32, i32, f32)]>,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    bold: bool,
    size: u64,
    c: char,
}

#[derive(Default)]
struct Cache {
    glyphs: HashMap<Key, Glyph>,
    /// Kerning of character pairs at a size, as `ScaleFont::kern` gives it.
    kerns: HashMap<(Key, char), f32>,
}

fn cache() -> &'static RwLock<Cache> {
    static CACHE: OnceLock<RwLock<Cache>> = OnceLock::new();
    CACHE.get_or_init(|| RwLock::new(Cache::default()))
}

fn rasterise(key: Key) -> Glyph {
    let font = face(key.bold).as_scaled(f64::from_bits(key.size) as f32);
    let id = font.glyph_id(key.c);
    let advance = font.h_advance(id);
    let Some(outline) = font.outline_glyph(font.scaled_glyph(key.c)) else {
        return Glyph { advance, y_shift: 0, pixels: Box::new([]) };
    };
    let y_shift = ((f64::from_bits(key.size) as f32) / 2.0 + outline.px_bounds().min.y) as i32;
    let mut pixels = Vec::new();
    outline.draw(|x, y, c| {
        if c > 0.0 {
            pixels.push((x as i32, y as i32, c));
        }
    });
    Glyph { advance, y_shift, pixels: pixels.into_boxed_slice() }
}

/// Makes sure every character of `text` (and every adjacent pair's kerning) is cached.
fn prepare(bold: bool, size: f64, text: &str) {
    let key = |c| Key { bold, size: size.to_bits(), c };
    let missing = {
        let cache = cache().read().unwrap_or_else(|e| e.into_inner());
        let mut prev: Option<char> = None;
        text.chars().any(|c| {
            let miss =
                !cache.glyphs.contains_key(&key(c)) || prev.is_some_and(|p| !cache.kerns.contains_key(&(key(p), c)));
            prev = Some(c);
            miss
        })
    };
    if !missing {
        return;
    }
    let mut cache = cache().write().unwrap_or_else(|e| e.into_inner());
    if cache.glyphs.len() + cache.kerns.len() + 2 * text.len() > 4 * MAX_GLYPHS {
        cache.glyphs.clear();
        cache.kerns.clear();
    }
    let font = face(bold).as_scaled(size as f32);
    let mut prev: Option<char> = None;
    for c in text.chars() {
        cache.glyphs.entry(key(c)).or_insert_with(|| rasterise(key(c)));
        if let Some(p) = prev {
            cache.kerns.entry((key(p), c)).or_insert_with(|| font.kern(font.glyph_id(p), font.glyph_id(c)));
        }
        prev = Some(c);
    }
}

fn is_ours<S: BackendTextStyle>(style: &S) -> Option<bool> {
    if style.family().as_str() != FONT {
        return None;
    }
    match style.style() {
        FontStyle::Normal => Some(false),
        FontStyle::Bold => Some(true),
        _ => None,
    }
}

/// plotters' layout box of `text`: `((0, 0), (width, size / 1.24))`, with the width
/// summed in plotters' order (advance, then the kerning with the previous character).
fn layout(cache: &Cache, bold: bool, size: f64, text: &str) -> ((i32, i32), (i32, i32)) {
    let key = |c| Key { bold, size: size.to_bits(), c };
    let mut x = 0f32;
    let mut prev: Option<char> = None;
    for c in text.chars() {
        x += cache.glyphs.get(&key(c)).map_or(0.0, |g| g.advance);
        if let Some(p) = prev {
            x += cache.kerns.get(&(key(p), c)).copied().unwrap_or(0.0);
        }
        prev = Some(c);
    }
    ((0, 0), (x as i32, (size / 1.24) as i32))
}

/// An RGB bitmap backend that draws what plotters' `BitMapBackend` draws, pixel for
/// pixel, with text from the glyph cache and single pixels (anti-aliased lines, glyph
/// edges) blended without a call to `floor` each. Fills and axis-aligned lines go to
/// plotters' own fast paths.
pub struct Surface<'a> {
    buf: &'a mut [u8],
    size: (u32, u32),
}

impl<'a> Surface<'a> {
    /// A surface over an RGB buffer of `w` × `h` pixels.
    ///
    /// # Panics
    /// When the buffer is not `w * h * 3` bytes long (a caller's bug).
    pub fn new(buf: &'a mut [u8], (w, h): (u32, u32)) -> Surface<'a> {
        assert_eq!(buf.len(), w as usize * h as usize * 3, "an RGB buffer of the surface's size");
        Surface { buf, size: (w, h) }
    }

    /// plotters' backend over the same pixels, for the operations it does fastest.
    fn bitmap(&mut self) -> BitMapBackend<'_> {
        BitMapBackend::with_buffer(self.buf, self.size)
    }
}

type Error = <BitMapBackend<'static> as DrawingBackend>::ErrorType;

impl DrawingBackend for Surface<'_> {
    type ErrorType = Error;

    fn get_size(&self) -> (u32, u32) {
        self.size
    }

    fn ensure_prepared(&mut self) -> Result<(), DrawingErrorKind<Error>> {
        Ok(())
    }

    fn present(&mut self) -> Result<(), DrawingErrorKind<Error>> {
        Ok(())
    }

    /// `BitMapBackend::draw_pixel` for RGB: opaque from an alpha of 255/256, otherwise
    /// each channel moves `floor(alpha * 256) / 256` of the way to the colour. The
    /// truncating cast is that floor, as alpha is positive here.
    #[inline]
    fn draw_pixel(&mut self, (x, y): BackendCoord, color: BackendColor) -> Result<(), DrawingErrorKind<Error>> {
        let (w, h) = self.size;
        if x < 0 || y < 0 || x as u32 >= w || y as u32 >= h {
            return Ok(());
        }
        let base = (y as usize * w as usize + x as usize) * 3;
        let Some(px) = self.buf.get_mut(base..base + 3) else { return Ok(()) };
        let (r, g, b) = color.rgb;
        if color.alpha >= 1.0 - 1.0 / 256.0 {
            px.copy_from_slice(&[r, g, b]);
        } else if color.alpha > 0.0 {
            let a = (color.alpha * 256.0) as u64;
            for (p, new) in px.iter_mut().zip([r, g, b]) {
                if new > *p {
                    *p += (u64::from(new - *p) * a / 256) as u8;
                } else {
                    *p -= (u64::from(*p - new) * a / 256) as u8;
                }
            }
        }
        Ok(())
    }

    fn draw_line<S: BackendStyle>(
        &mut self,
        from: BackendCoord,
        to: BackendCoord,
        style: &S,
    ) -> Result<(), DrawingErrorKind<Error>> {
        if (from.0 == to.0 || from.1 == to.1) && style.stroke_width() == 1 {
            return self.bitmap().draw_line(from, to, style);
        }
        plotters_backend::rasterizer::draw_line(self, from, to, style)
    }

    fn draw_rect<S: BackendStyle>(
        &mut self,
        upper_left: BackendCoord,
        bottom_right: BackendCoord,
        style: &S,
        fill: bool,
    ) -> Result<(), DrawingErrorKind<Error>> {
        if fill {
            return self.bitmap().draw_rect(upper_left, bottom_right, style, fill);
        }
        plotters_backend::rasterizer::draw_rect(self, upper_left, bottom_right, style, fill)
    }

    fn blit_bitmap(&mut self, pos: BackendCoord, size: (u32, u32), src: &[u8]) -> Result<(), DrawingErrorKind<Error>> {
        self.bitmap().blit_bitmap(pos, size, src)
    }

    fn estimate_text_size<S: BackendTextStyle>(
        &self,
        text: &str,
        style: &S,
    ) -> Result<(u32, u32), DrawingErrorKind<Error>> {
        let Some(bold) = is_ours(style) else {
            // Another font: plotters' default measurement.
            let ((x0, y0), (x1, y1)) = style.layout_box(text).map_err(|e| DrawingErrorKind::FontError(Box::new(e)))?;
            return Ok(((x1 - x0) as u32, (y1 - y0) as u32));
        };
        prepare(bold, style.size(), text);
        let cache = cache().read().unwrap_or_else(|e| e.into_inner());
        let ((x0, y0), (x1, y1)) = layout(&cache, bold, style.size(), text);
        Ok(((x1 - x0) as u32, (y1 - y0) as u32))
    }

    /// plotters' `DrawingBackend::draw_text` and `FontDataInternal::draw` (ab_glyph),
    /// step for step, with the glyphs taken from the cache.
    fn draw_text<S: BackendTextStyle>(
        &mut self,
        text: &str,
        style: &S,
        pos: BackendCoord,
    ) -> Result<(), DrawingErrorKind<Error>> {
        let Some(bold) = is_ours(style) else { return self.bitmap().draw_text(text, style, pos) };
        let color = style.color();
        if color.alpha == 0.0 {
            return Ok(());
        }
        let size = style.size();
        prepare(bold, size, text);
        let cache = cache().read().unwrap_or_else(|e| e.into_inner());
        let ((min_x, min_y), (max_x, max_y)) = layout(&cache, bold, size, text);
        let (width, height) = (max_x - min_x, max_y - min_y);
        let dx = match style.anchor().h_pos {
            HPos::Left => 0,
            HPos::Right => -width,
            HPos::Center => -width / 2,
        };
        let dy = match style.anchor().v_pos {
            VPos::Top => 0,
            VPos::Center => -height / 2,
            VPos::Bottom => -height,
        };
        let trans = style.transform();
        let (w, h) = self.size;
        let key = |c| Key { bold, size: size.to_bits(), c };
        let mut x_shift = 0f32;
        let mut prev: Option<char> = None;
        for c in text.chars() {
            if let Some(p) = prev {
                x_shift += cache.kerns.get(&(key(p), c)).copied().unwrap_or(0.0);
            }
            prev = Some(c);
            let Some(g) = cache.glyphs.get(&key(c)) else { continue };
            let xs = x_shift as i32;
            for &(x, y, a) in g.pixels.iter() {
                let (x, y) = trans.transform(x + xs + dx - min_x, y + g.y_shift + dy - min_y);
                let (x, y) = (pos.0 + x, pos.1 + y);
                if x >= 0 && x < w as i32 && y >= 0 && y < h as i32 {
                    self.draw_pixel((x, y), color.mix(f64::from(a)))?;
                }
            }
            x_shift += g.advance;
        }
        Ok(())
    }
}

/// Encodes an RGB buffer of `w` × `h` as PNG.
///
/// The fast (fdeflate) setting with the Sub filter: graphs are mostly flat colour, and
/// Sub turns flat runs into zeros that it compresses nearly as well as the default
/// setting, in a fraction of the time. (A palette image would be a third of the data,
/// but anti-aliased lines give graphs about a thousand colours; no filter or Up made
/// the file four times larger and the encoding slower.)
///
/// # Errors
/// The encoder's, which only a buffer of the wrong length gives.
pub fn encode_png(rgb: &[u8], w: u32, h: u32) -> Result<Vec<u8>, png::EncodingError> {
    let mut out = Vec::with_capacity(64 * 1024);
    let mut enc = png::Encoder::new(&mut out, w, h);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    enc.set_compression(png::Compression::Fast);
    enc.set_filter(png::FilterType::Sub);
    let mut writer = enc.write_header()?;
    writer.write_image_data(rgb)?;
    writer.finish()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use plotters::prelude::*;
    use plotters::style::text_anchor::{HPos, Pos, VPos};
    use plotters::style::FontTransform;

    fn render<DB: DrawingBackend>(root: DrawingArea<DB, plotters::coord::Shift>) {
        crate::graph::register_fonts();
        root.fill(&WHITE).unwrap();
        let texts = [
            ("load_one on web-1 <&>", 14.0, FontTransform::None, Pos::new(HPos::Left, VPos::Top), (3, 2)),
            ("12:00 Avg: 1.5k B/s", 12.0, FontTransform::None, Pos::new(HPos::Center, VPos::Top), (100, 40)),
            ("AVA Wy Tj", 12.3333, FontTransform::None, Pos::new(HPos::Right, VPos::Center), (190, 60)),
            ("bytes/s", 12.0, FontTransform::Rotate270, Pos::new(HPos::Center, VPos::Top), (5, 60)),
            ("clipped at the edge", 9.0, FontTransform::None, Pos::new(HPos::Left, VPos::Bottom), (150, 99)),
        ];
        for (s, size, t, pos, at) in texts {
            let style =
                TextStyle::from((FONT, size).into_font().transform(t)).pos(pos).color(&RGBColor(0x33, 0x66, 0xcc));
            root.draw(&Text::new(s, at, style)).unwrap();
            let bold = TextStyle::from((FONT, size, FontStyle::Bold).into_font()).pos(pos);
            root.draw(&Text::new(s, (at.0, at.1 + 20), bold)).unwrap();
            assert_eq!(
                root.estimate_text_size(s, &TextStyle::from((FONT, size).into_font())).unwrap().0 > 0,
                !s.is_empty()
            );
        }
        root.present().unwrap();
    }

    #[test]
    fn text_pixels_match_plotters() {
        let (w, h) = (200u32, 120u32);
        let mut ours = vec![0u8; (w * h * 3) as usize];
        let mut theirs = vec![0u8; (w * h * 3) as usize];
        render(Surface::new(&mut ours, (w, h)).into_drawing_area());
        render(BitMapBackend::with_buffer(&mut theirs, (w, h)).into_drawing_area());
        assert!(ours.iter().any(|b| *b != 255), "something was drawn");
        assert!(ours == theirs, "the cached glyphs draw exactly what plotters draws");
    }

    #[test]
    fn text_sizes_match_plotters() {
        crate::graph::register_fonts();
        let mut buf = vec![0u8; 30 * 30 * 3];
        let ours = Surface::new(&mut buf, (30, 30));
        let mut buf2 = vec![0u8; 30 * 30 * 3];
        let theirs = BitMapBackend::with_buffer(&mut buf2, (30, 30));
        for (s, size) in [("Now: 1.5k", 12.0), ("AVAV", 9.5), ("", 11.0), ("ÄÖü €", 13.0)] {
            let f = TextStyle::from((FONT, size).into_font());
            assert_eq!(ours.estimate_text_size(s, &f).unwrap(), theirs.estimate_text_size(s, &f).unwrap(), "{s}");
        }
    }
}
