//! A server's wall clock under the test's control: Debian's `libfaketime` preloaded into a
//! server process, reading its offset from a file the test rewrites.
//!
//! A real clock fault — an NTP step, a VM resumed with a stale clock, a clock running fast —
//! moves `CLOCK_REALTIME` and leaves `CLOCK_MONOTONIC` alone (a step never moves the
//! monotonic clock). [`FakeClock`] does the same to one process: the process runs with
//! `LD_PRELOAD` of libfaketime, `FAKETIME_TIMESTAMP_FILE` naming the clock's file (one line,
//! `+<seconds>`, an offset from the real time), `FAKETIME_NO_CACHE=1` (the file is read on
//! every call, so a rewrite takes effect at once) and `FAKETIME_DONT_FAKE_MONOTONIC=1`.
//! [`FakeClock::jump`] steps the offset; [`FakeClock::skew`] makes it grow at `rate - 1`
//! seconds per second from a thread that rewrites the file every few milliseconds (libfaketime's
//! own `x` rate applies from the start of the process, so changing it mid-run is itself a jump).
//! Each rewrite is a rename of a complete file, so the server never reads half an offset.
//!
//! What it cannot reach, checked by [`fakeable`] before a server is started:
//!
//! - **Go programs** (the NATS server): the Go runtime reads the clock through the vDSO, not
//!   through libc, and a statically linked binary ignores `LD_PRELOAD` altogether (checked on
//!   this machine: `nats-server` under libfaketime at `+1y` logs the real date while `date`
//!   under the same settings prints next year's). Linux time namespaces do not help: they
//!   offset only `CLOCK_MONOTONIC` and `CLOCK_BOOTTIME` (`/proc/self/timens_offsets`), never
//!   `CLOCK_REALTIME`.
//! - **Containers**: the images carry no libfaketime; a fake clock needs the process runtime.
//!
//! Two quirks of libfaketime 0.9.10 (Debian bookworm) shape the environment:
//!
//! - A server linked with jemalloc (Debian's `redis-server`) deadlocks at start: libfaketime
//!   initialises inside jemalloc's initialisation (jemalloc reads the clock, libfaketime's
//!   set-up allocates). glibc's `libc_malloc_debug.so.0`, preloaded before libfaketime, routes
//!   `malloc` to glibc's allocator and breaks the cycle; how a server allocates does not
//!   change how it reads the clock.
//! - Every process makes `/dev/shm/faketime_shm_<pid>` and `sem.faketime_sem_<pid>` and
//!   removes them only when it exits cleanly; the process runtime removes them after a kill
//!   ([`ServiceSpec::leaves_behind`]).
//! - With `FAKETIME_DONT_FAKE_MONOTONIC=1`, an absolute `clock_nanosleep` on the monotonic
//!   clock fails with `EINVAL` (Python's `time.sleep`). The servers here wait in
//!   `epoll_wait` with relative timeouts and are unaffected.
//!
//! | variable | meaning |
//! |---|---|
//! | `LOCKCHECK_LIBFAKETIME` | the libfaketime library to preload (default: Debian's `/usr/lib/<arch>-linux-gnu/faketime/libfaketime.so.1`; `scripts/setup/faketime.sh` installs it). |

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::{Policy, Runtime, Service, ServiceError, ServiceSpec};

/// How often a skewed clock's file is rewritten: the fast clock advances in steps this long
/// times `rate - 1`.
const SKEW_STEP: Duration = Duration::from_millis(5);

/// The libfaketime library to preload.
pub fn libfaketime() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("LOCKCHECK_LIBFAKETIME") {
        let path = PathBuf::from(path);
        return if path.is_file() { Ok(path) } else { Err(format!("no libfaketime at {}", path.display())) };
    }
    let arch = std::env::consts::ARCH;
    [format!("/usr/lib/{arch}-linux-gnu/faketime/libfaketime.so.1"), "/usr/lib/faketime/libfaketime.so.1".to_owned()]
        .into_iter()
        .map(PathBuf::from)
        .find(|path| path.is_file())
        .ok_or_else(|| "no libfaketime (run scripts/setup/faketime.sh, or set LOCKCHECK_LIBFAKETIME)".to_owned())
}

/// glibc's malloc shim, preloaded first so that a jemalloc server can start under libfaketime.
fn glibc_malloc() -> Option<PathBuf> {
    let arch = std::env::consts::ARCH;
    [
        format!("/lib/{arch}-linux-gnu/libc_malloc_debug.so.0"),
        format!("/usr/lib/{arch}-linux-gnu/libc_malloc_debug.so.0"),
    ]
    .into_iter()
    .map(PathBuf::from)
    .find(|path| path.is_file())
}

/// Whether libfaketime can move the clock `binary` reads: `Err` says why not (a Go program, a
/// statically linked binary). A script (`#!`) is judged by nothing more: its interpreter is
/// assumed to read the clock through libc, as CPython does.
pub fn fakeable(binary: &str) -> Result<(), String> {
    let path = crate::process::find_binary(binary)?;
    let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    if bytes.starts_with(b"#!") {
        return Ok(());
    }
    let why = |what: &str| {
        format!(
            "{} is {what}: libfaketime (an LD_PRELOAD of libc's clock functions) cannot reach its clock, \
             and Linux time namespaces offset only CLOCK_MONOTONIC and CLOCK_BOOTTIME, never CLOCK_REALTIME",
            path.display()
        )
    };
    // Every Go binary since Go 1.13 carries its build information in this section (looking
    // for the section, not its magic bytes, which any program that mentions them contains).
    if elf_section_names(&bytes).is_some_and(|names| names.iter().any(|name| name == ".go.buildinfo")) {
        return Err(why("a Go program (its runtime reads the clock through the vDSO, not libc)"));
    }
    match elf_has_interpreter(&bytes) {
        Some(true) => Ok(()),
        Some(false) => Err(why("statically linked (it ignores LD_PRELOAD)")),
        None => Err(format!("{} is neither an ELF executable nor a script", path.display())),
    }
}

/// Whether a 64-bit little-endian ELF file names a program interpreter (is dynamically
/// linked); `None` if it is not such a file.
fn elf_has_interpreter(bytes: &[u8]) -> Option<bool> {
    const PT_INTERP: u32 = 3;
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" || bytes[4] != 2 || bytes[5] != 1 {
        return None;
    }
    let u16_at = |at: usize| bytes.get(at..at + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let phoff = usize::try_from(u64::from_le_bytes(bytes[0x20..0x28].try_into().ok()?)).ok()?;
    let phentsize = usize::from(u16_at(0x36)?);
    let phnum = usize::from(u16_at(0x38)?);
    let mut interpreter = false;
    for i in 0..phnum {
        let at = phoff.checked_add(i.checked_mul(phentsize)?)?;
        let kind = u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?);
        interpreter |= kind == PT_INTERP;
    }
    Some(interpreter)
}

/// The section names of a 64-bit little-endian ELF file; `None` if it is not one, or its
/// section table is malformed.
fn elf_section_names(bytes: &[u8]) -> Option<Vec<String>> {
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" || bytes[4] != 2 || bytes[5] != 1 {
        return None;
    }
    let u16_at = |at: usize| bytes.get(at..at + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |at: usize| bytes.get(at..at + 4).map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")));
    let u64_at = |at: usize| bytes.get(at..at + 8).map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")));
    let shoff = usize::try_from(u64_at(0x28)?).ok()?;
    let shentsize = usize::from(u16_at(0x3a)?);
    let shnum = usize::from(u16_at(0x3c)?);
    let shstrndx = usize::from(u16_at(0x3e)?);
    let header = |i: usize| shoff.checked_add(i.checked_mul(shentsize)?);
    let strtab = header(shstrndx)?;
    let strtab_offset = usize::try_from(u64_at(strtab + 0x18)?).ok()?;
    let strtab_size = usize::try_from(u64_at(strtab + 0x20)?).ok()?;
    let names = bytes.get(strtab_offset..strtab_offset.checked_add(strtab_size)?)?;
    (0..shnum)
        .map(|i| {
            let name = usize::try_from(u32_at(header(i)?)?).ok()?;
            let rest = names.get(name..)?;
            let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
            Some(String::from_utf8_lossy(&rest[..end]).into_owned())
        })
        .collect()
}

/// The offset and its motion, shared with the skew thread.
struct Offset {
    /// Nanoseconds ahead of the real clock, as last written.
    ahead: AtomicU64,
    skewing: AtomicBool,
    lock: Mutex<()>,
    file: PathBuf,
}

impl Offset {
    /// Writes `ahead` to the file, atomically (a complete file renamed over the old one).
    fn write(&self, ahead: Duration) -> std::io::Result<()> {
        let _one_writer = self.lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let fresh = self.file.with_extension("next");
        std::fs::write(&fresh, format!("+{:.6}\n", ahead.as_secs_f64()))?;
        std::fs::rename(&fresh, &self.file)?;
        self.ahead.store(u64::try_from(ahead.as_nanos()).unwrap_or(u64::MAX), Ordering::SeqCst);
        Ok(())
    }

    fn ahead(&self) -> Duration {
        Duration::from_nanos(self.ahead.load(Ordering::SeqCst))
    }
}

/// A wall clock for server processes, ahead of the real one by an offset the test moves.
/// Start servers under it with [`ServiceSpec::fake_clock`] and [`start_with_fake_clock`]; the
/// clock's directory is removed on drop (stop its servers first).
pub struct FakeClock {
    dir: PathBuf,
    offset: Arc<Offset>,
    skew: Option<std::thread::JoinHandle<()>>,
    preload: String,
}

impl std::fmt::Debug for FakeClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeClock").field("file", &self.offset.file).field("ahead", &self.ahead()).finish()
    }
}

impl FakeClock {
    /// A clock at the real time (offset zero), not running fast.
    pub fn new() -> Result<FakeClock, ServiceError> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let no_clock = |why: String| ServiceError::NoRuntime { name: "a fake clock".to_owned(), why };
        let faketime = libfaketime().map_err(no_clock)?;
        let mut preload: Vec<String> = glibc_malloc().iter().map(|path| path.display().to_string()).collect();
        preload.push(faketime.display().to_string());
        let dir = std::env::temp_dir().join(format!(
            "lockcheck-clock-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).map_err(|e| no_clock(format!("no directory {}: {e}", dir.display())))?;
        let offset = Arc::new(Offset {
            ahead: AtomicU64::new(0),
            skewing: AtomicBool::new(false),
            lock: Mutex::new(()),
            file: dir.join("clock"),
        });
        offset.write(Duration::ZERO).map_err(|e| no_clock(format!("cannot write the clock file: {e}")))?;
        Ok(FakeClock { dir, offset, skew: None, preload: preload.join(" ") })
    }

    /// The environment a process needs to run on this clock.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("LD_PRELOAD", self.preload.clone()),
            ("FAKETIME_TIMESTAMP_FILE", self.offset.file.display().to_string()),
            ("FAKETIME_NO_CACHE", "1".to_owned()),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1".to_owned()),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value))
        .collect()
    }

    /// The file the clock's processes read.
    pub fn file(&self) -> &Path {
        &self.offset.file
    }

    /// How far ahead of the real clock it is now.
    pub fn ahead(&self) -> Duration {
        self.offset.ahead()
    }

    /// Steps the clock forward by `by` at once (an NTP step): the processes' next reading of
    /// the wall clock is `by` later. Their monotonic clock does not move.
    pub fn jump(&self, by: Duration) -> std::io::Result<()> {
        self.offset.write(self.offset.ahead() + by)
    }

    /// Makes the clock run `rate` times as fast as the real one (`rate` > 1) until
    /// [`FakeClock::unskew`]: a thread rewrites the offset every few milliseconds.
    pub fn skew(&mut self, rate: f64) -> std::io::Result<()> {
        if !(rate.is_finite() && rate > 1.0) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("a skew rate of {rate} is not > 1"),
            ));
        }
        self.unskew();
        let offset = self.offset.clone();
        offset.skewing.store(true, Ordering::SeqCst);
        let (from, since) = (offset.ahead(), Instant::now());
        self.skew = Some(std::thread::spawn(move || {
            while offset.skewing.load(Ordering::SeqCst) {
                std::thread::sleep(SKEW_STEP);
                // A failed write leaves the clock where it was; the next step catches up.
                let _ = offset.write(from + since.elapsed().mul_f64(rate - 1.0));
            }
        }));
        Ok(())
    }

    /// Stops a skew; the clock stays as far ahead as it got (it does not step back).
    pub fn unskew(&mut self) {
        self.offset.skewing.store(false, Ordering::SeqCst);
        if let Some(thread) = self.skew.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for FakeClock {
    fn drop(&mut self) {
        self.unskew();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl ServiceSpec {
    /// Runs the server on `clock` (its environment; the process runtime only, see
    /// [`start_with_fake_clock`]).
    pub fn fake_clock(mut self, clock: &FakeClock) -> Self {
        self.env.extend(clock.env());
        // libfaketime makes a shared-memory segment and a semaphore per process and removes
        // them only at a clean exit; a server killed by a fault or at the end never has one.
        self.leaves_behind("/dev/shm/faketime_shm_{pid}").leaves_behind("/dev/shm/sem.faketime_sem_{pid}")
    }
}

/// Starts `spec` as a process on `clock`, after checking that libfaketime can reach the
/// binary's clock ([`fakeable`]; refused with [`ServiceError::ClockNotFakeable`] otherwise).
/// Honours `LOCKCHECK_SERVICES` as [`provision`](crate::provision) does: `Ok(None)`, printed,
/// only when skipping is allowed.
pub async fn start_with_fake_clock(spec: &ServiceSpec, clock: &FakeClock) -> Result<Option<Service>, ServiceError> {
    if let Err(why) = fakeable(&spec.binary) {
        return Err(ServiceError::ClockNotFakeable { name: spec.name.clone(), why });
    }
    match Service::start_on(&spec.clone().fake_clock(clock), Runtime::Process).await {
        Ok(service) => Ok(Some(service)),
        Err(error) if Policy::from_env() == Policy::Skip => {
            eprintln!("SKIPPED (LOCKCHECK_SERVICES=skip): {error}");
            Ok(None)
        }
        Err(error) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jump_and_a_skew_move_the_offset_in_the_file() {
        let Ok(mut clock) = FakeClock::new() else { return };
        let read = |clock: &FakeClock| std::fs::read_to_string(clock.file()).unwrap();
        assert_eq!(read(&clock).trim(), "+0.000000");
        clock.jump(Duration::from_millis(2_500)).unwrap();
        assert_eq!(read(&clock).trim(), "+2.500000");
        clock.skew(3.0).unwrap();
        let start = Instant::now();
        while clock.ahead() < Duration::from_millis(2_540) {
            assert!(start.elapsed() < Duration::from_secs(5), "the skew thread does not advance the clock");
            std::thread::yield_now();
        }
        clock.unskew();
        let stopped = clock.ahead();
        assert!(stopped >= Duration::from_millis(2_540));
        assert!(read(&clock).trim().parse::<f64>().unwrap() >= 2.54);
        assert!(clock.skew(0.5).is_err());
        let dir = clock.dir.clone();
        drop(clock);
        assert!(!dir.exists(), "the clock's directory goes with it");
    }

    #[test]
    fn an_elf_without_an_interpreter_is_not_fakeable() {
        assert_eq!(elf_has_interpreter(b"#!/bin/sh\n"), None);
        let shell = std::fs::read("/bin/sh").unwrap();
        assert_eq!(elf_has_interpreter(&shell), Some(true));
        assert!(fakeable("sh").is_ok());
        let names = elf_section_names(&shell).unwrap();
        assert!(names.iter().any(|name| name == ".text"), "{names:?}");
        // This test binary mentions Go's build-info magic and is no Go program.
        let me = std::env::current_exe().unwrap();
        assert!(fakeable(&me.display().to_string()).is_ok());
    }
}
