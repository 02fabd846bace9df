//! The font PNG text is drawn with.
//!
//! plotters' `ab_glyph` backend draws text from a TTF file registered at run time; we register
//! one under the family name `sans-serif`, the family every chart asks for. The default is
//! DejaVu Sans, which Debian's `fonts-dejavu-core` installs (scripts/setup/fonts.sh).

use std::path::PathBuf;
use std::sync::OnceLock;

use plotters::style::FontStyle;

use crate::ReportError;

/// Where we look for a font when `LOCKCHECK_FONT` is not set.
const CANDIDATES: [&str; 4] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];

/// Registers the font once per process; later calls return the first outcome.
pub(crate) fn ensure_font() -> Result<(), ReportError> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED.get_or_init(register).clone().map_err(ReportError::NoFont)
}

fn register() -> Result<(), String> {
    let path = match std::env::var_os("LOCKCHECK_FONT") {
        Some(path) => PathBuf::from(path),
        None => CANDIDATES.iter().map(PathBuf::from).find(|p| p.exists()).ok_or_else(|| {
            format!(
                "no TTF font found (looked at {}); install one with scripts/setup/fonts.sh \
                 (Debian's fonts-dejavu-core) or point LOCKCHECK_FONT at a .ttf file",
                CANDIDATES.join(", ")
            )
        })?,
    };
    let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    // plotters keeps fonts for the life of the process; so does this one-time leak.
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    for style in [FontStyle::Normal, FontStyle::Bold, FontStyle::Italic, FontStyle::Oblique] {
        plotters::style::register_font("sans-serif", style, bytes)
            .map_err(|_| format!("{} is not a TTF font plotters can read", path.display()))?;
    }
    Ok(())
}
