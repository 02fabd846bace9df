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

pub(crate) struct FenceCounter {
    next: u64,
    ceiling: u64,
    state_file: Option<PathBuf>,
}

impl FenceCounter {
    pub(crate) fn new(state_file: Option<PathBuf>) -> Result<Self, FenceStateError> {
        let clock = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        let mut next = clock.max(1);
        if let Some(path) = &state_file
            && let Some(stored) = read_ceiling(path)?
        {
            next = next.max(stored.saturating_add(1));
        }
        let mut counter = FenceCounter { next, ceiling: next, state_file };
        counter.reserve()?;
        Ok(counter)
    }

    /// The next fencing value. Fails only if the ceiling cannot be persisted, in which case
    /// no value beyond the persisted ceiling is handed out.
    pub(crate) fn next(&mut self) -> Result<u64, FenceStateError> {
        if self.next >= self.ceiling {
            self.reserve()?;
        }
        let value = self.next;
        self.next += 1;
        Ok(value)
    }

    fn reserve(&mut self) -> Result<(), FenceStateError> {
        let ceiling = self.next.saturating_add(BLOCK);
        if let Some(path) = &self.state_file {
            write_ceiling(path, ceiling)?;
        }
        self.ceiling = ceiling;
        Ok(())
    }
}

fn read_ceiling(path: &Path) -> Result<Option<u64>, FenceStateError> {
    let err = |message: String| FenceStateError { path: path.to_owned(), message };
    match std::fs::read_to_string(path) {
        Ok(text) => text.trim().parse::<u64>().map(Some).map_err(|e| err(format!("not a number: {e}"))),
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

    #[test]
    fn token_format_is_fence_then_salt() {
        let t = token(0x0123_4567_89ab_cdef);
        assert_eq!(t.len(), 32);
        assert!(t.starts_with("0123456789abcdef"));
        let salt = u64::from_str_radix(&t[16..], 16).unwrap();
        assert_eq!(t, format!("{:016x}{salt:016x}", 0x0123_4567_89ab_cdef_u64));
    }
}
