//! Tokens that are also fencing tokens, in the newest dflockd servers' format: 16 hex digits
//! of a big-endian u64 counter, then 16 hex digits of random salt (so a token cannot be
//! guessed from the previous one).
//!
//! The counter is global across keys and starts at the wall clock in nanoseconds, so it
//! normally keeps increasing across restarts. A clock stepped backwards would break that, so
//! with a state file the server also persists a *ceiling*: it reserves blocks of counter
//! values, writes the end of the block (atomically: temp file, fsync, rename) before handing
//! out any value in it, and after a restart starts above the stored ceiling. Fencing then
//! survives restarts whatever the clock does, at the cost of one small write per block.
//!
//! The counter never wraps: the largest value is `u64::MAX` (16 hex digits hold no more).
//! Once it is handed out, or once the state file's ceiling is `u64::MAX`, the counter is
//! *exhausted*: [`FenceCounter::next`] refuses every further value, so the server refuses
//! to grant (`error_fence_exhausted`) rather than hand out a token that orders before an
//! older one. The file only ever stores ceilings that grow, at most `u64::MAX`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// How many counter values one persisted ceiling covers.
const BLOCK: u64 = 1 << 16;

/// The state file could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("fence state file {path}: {message}")]
pub struct FenceStateError {
    path: PathBuf,
    message: String,
}

/// Why no fencing value was handed out.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FenceError {
    /// Every value up to `u64::MAX` has been handed out (or reserved by an earlier run).
    #[error("the fencing counter is exhausted")]
    Exhausted,
    /// The next block's ceiling could not be persisted.
    #[error(transparent)]
    State(#[from] FenceStateError),
}

pub(crate) struct FenceCounter {
    /// The next value to hand out; `None` once exhausted.
    next: Option<u64>,
    /// Values below this are covered by the persisted ceiling (with a state file).
    ceiling: u64,
    /// The last value handed out.
    last: Option<u64>,
    state_file: Option<PathBuf>,
}

impl FenceCounter {
    pub(crate) fn new(state_file: Option<PathBuf>) -> Result<Self, FenceStateError> {
        let clock = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let clock = u64::try_from(clock).unwrap_or(u64::MAX);
        Self::starting_at(clock.max(1), state_file)
    }

    /// A counter whose first value is `start`, or above the state file's ceiling if that is
    /// higher (tests start near the end of the range).
    pub(crate) fn starting_at(start: u64, state_file: Option<PathBuf>) -> Result<Self, FenceStateError> {
        let mut next = Some(start);
        let mut ceiling = start;
        if let Some(path) = &state_file
            && let Some(stored) = read_ceiling(path)?
        {
            // A stored ceiling of u64::MAX leaves nothing above it: exhausted from the start.
            next = next.map(|n| n.max(stored)).and_then(|n| if n == stored { stored.checked_add(1) } else { Some(n) });
            ceiling = ceiling.max(stored);
        }
        let mut counter = FenceCounter { next, ceiling, last: None, state_file };
        if counter.next.is_some() {
            counter.reserve()?;
        }
        Ok(counter)
    }

    /// The next fencing value. Fails if the counter is exhausted, or if the ceiling cannot be
    /// persisted (then no value beyond the persisted ceiling is handed out).
    pub(crate) fn next(&mut self) -> Result<u64, FenceError> {
        let value = self.next.ok_or(FenceError::Exhausted)?;
        if value >= self.ceiling {
            self.reserve()?;
        }
        // Past u64::MAX there is nothing: exhausted, never wrapped.
        self.next = value.checked_add(1);
        self.last = Some(value);
        Ok(value)
    }

    /// Makes the next value need a new persisted ceiling (tests of a failing state file).
    #[cfg(test)]
    pub(crate) fn reserve_at_next(&mut self) {
        if let Some(next) = self.next {
            self.ceiling = next;
        }
    }

    /// The last value handed out, if any.
    pub(crate) fn last(&self) -> Option<u64> {
        self.last
    }

    /// Persists a ceiling above the next value. At the end of the range the ceiling is
    /// `u64::MAX` itself, which covers the last value.
    fn reserve(&mut self) -> Result<(), FenceStateError> {
        let Some(next) = self.next else { return Ok(()) };
        let ceiling = next.saturating_add(BLOCK).max(self.ceiling);
        if let Some(path) = &self.state_file {
            write_ceiling(path, ceiling)?;
        }
        self.ceiling = ceiling;
        Ok(())
    }
}

/// The state file's text: one decimal u64 (surrounding whitespace allowed). Anything else
/// (empty, negative, over u64::MAX, junk) is an error, never a silent fresh start.
pub fn parse_ceiling(text: &str) -> Result<u64, String> {
    let digits = text.trim();
    if digits.is_empty() {
        return Err("empty".into());
    }
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("not a decimal number: {:?}", digits.chars().take(40).collect::<String>()));
    }
    digits.parse::<u64>().map_err(|_| format!("larger than {}", u64::MAX))
}

fn read_ceiling(path: &Path) -> Result<Option<u64>, FenceStateError> {
    let err = |message: String| FenceStateError { path: path.to_owned(), message };
    match std::fs::read_to_string(path) {
        Ok(text) => parse_ceiling(&text).map(Some).map_err(err),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(err(e.to_string())),
    }
}

fn write_ceiling(path: &Path, ceiling: u64) -> Result<(), FenceStateError> {
    let err = |e: std::io::Error| FenceStateError { path: path.to_owned(), message: e.to_string() };
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp).map_err(err)?;
    writeln!(file, "{ceiling}").map_err(err)?;
    file.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

/// A token carrying `fence`: `<16 hex fence><16 hex salt>`.
pub(crate) fn token(fence: u64) -> String {
    // By hand rather than `format!`: one of the few things every grant does.
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bits = (u128::from(fence) << 64) | u128::from(rand::random::<u64>());
    let digits: [u8; 32] = std::array::from_fn(|i| HEX[((bits >> (124 - 4 * i)) & 0xf) as usize]);
    String::from_utf8(digits.to_vec()).expect("hex digits are ASCII")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn persisted_ceiling_keeps_fences_monotonic_across_restarts() {
        let dir = std::env::temp_dir().join(format!("lockcheck-fence-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("fence");
        // A ceiling far in the future stands for a clock that was stepped backwards.
        let future = u64::MAX / 2;
        write_ceiling(&path, future).unwrap();
        let mut counter = FenceCounter::new(Some(path.clone())).unwrap();
        let first = counter.next().unwrap();
        assert!(first > future);
        let last = (0..BLOCK + 10).map(|_| counter.next().unwrap()).last().unwrap();
        drop(counter);
        assert!(read_ceiling(&path).unwrap().unwrap() >= last);
        let mut restarted = FenceCounter::new(Some(path)).unwrap();
        assert!(restarted.next().unwrap() > last);
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn state_file(name: &str) -> (PathBuf, PathBuf) {
        let dir = std::env::temp_dir().join(format!("lockcheck-fence-{name}-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        (dir.join("fence"), dir)
    }

    /// Guards against the fence counter wrapping: with a state file near u64::MAX it used to
    /// hand out u64::MAX, then 0 (or panic in a debug build), and persist the wrapped ceiling.
    #[test]
    fn the_counter_is_exhausted_at_the_end_of_the_range_never_wrapped() {
        let (path, dir) = state_file("end");
        write_ceiling(&path, u64::MAX - 3).unwrap();
        let mut counter = FenceCounter::new(Some(path.clone())).unwrap();
        let values: Vec<u64> = std::iter::from_fn(|| counter.next().ok()).take(10).collect();
        assert_eq!(values, [u64::MAX - 2, u64::MAX - 1, u64::MAX]);
        assert!(matches!(counter.next(), Err(FenceError::Exhausted)));
        assert!(matches!(counter.next(), Err(FenceError::Exhausted)), "and stays exhausted");
        assert_eq!(counter.last(), Some(u64::MAX));
        assert_eq!(read_ceiling(&path).unwrap(), Some(u64::MAX), "the file holds the end, not a wrapped value");
        drop(counter);
        // A restart on that file grants nothing either.
        let mut restarted = FenceCounter::new(Some(path.clone())).unwrap();
        assert!(matches!(restarted.next(), Err(FenceError::Exhausted)));
        assert_eq!(read_ceiling(&path).unwrap(), Some(u64::MAX));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn without_a_state_file_the_end_of_the_range_is_exhausted_too() {
        let mut counter = FenceCounter::starting_at(u64::MAX - 1, None).unwrap();
        assert_eq!(counter.next().unwrap(), u64::MAX - 1);
        assert_eq!(counter.next().unwrap(), u64::MAX);
        assert!(matches!(counter.next(), Err(FenceError::Exhausted)));
    }

    #[test]
    fn a_hostile_state_file_is_refused_not_read_as_zero() {
        for text in ["", "  ", "-1", "18446744073709551616", "1e9", "0x10", "12 34", "\u{0}"] {
            assert!(parse_ceiling(text).is_err(), "{text:?}");
        }
        assert_eq!(parse_ceiling(" 42\n"), Ok(42));
        assert_eq!(parse_ceiling("18446744073709551615"), Ok(u64::MAX));
        let (path, dir) = state_file("junk");
        std::fs::write(&path, "junk").unwrap();
        let error = FenceCounter::new(Some(path)).err().expect("junk is refused");
        assert!(error.to_string().contains("not a decimal number"), "{error}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    proptest::proptest! {
        /// Any file content: parsed or refused, never a panic; what parses round-trips.
        #[test]
        fn parse_ceiling_never_panics(text in ".{0,64}", n in proptest::prelude::any::<u64>()) {
            let _ = parse_ceiling(&text);
            proptest::prop_assert_eq!(parse_ceiling(&format!("{n}\n")), Ok(n));
        }

        /// From any start, the values handed out strictly increase until exhaustion.
        #[test]
        fn values_strictly_increase_until_exhausted(back in 0u64..200, take in 0usize..300) {
            let mut counter = FenceCounter::starting_at(u64::MAX - back, None).unwrap();
            let mut last = None;
            for _ in 0..take {
                match counter.next() {
                    Ok(v) => {
                        proptest::prop_assert!(last.is_none_or(|l| v > l));
                        last = Some(v);
                    }
                    Err(FenceError::Exhausted) => {
                        proptest::prop_assert_eq!(last, Some(u64::MAX));
                        break;
                    }
                    Err(e) => proptest::prop_assert!(false, "{e}"),
                }
            }
        }
    }

    #[test]
    fn token_format_is_fence_then_salt() {
        let t = token(0x0123_4567_89ab_cdef);
        assert_eq!(t.len(), 32);
        assert!(t.starts_with("0123456789abcdef"));
        let salt = u64::from_str_radix(&t[16..], 16).unwrap();
        assert_eq!(t, format!("{:016x}{salt:016x}", 0x0123_4567_89ab_cdef_u64));
    }
}
