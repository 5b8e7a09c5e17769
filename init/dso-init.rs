//! dso-init: the first process of a container that uses env references.
//!
//! `dso-init ENV_FILE CMD [ARGS...]`: reads `VAR=value\0` records from ENV_FILE (written by
//! dso-runc into the container's secrets tmpfs), unlinks it, sets the variables and `execvp`s
//! CMD with the original argv, so the user's command keeps PID 1.
//!
//! It must run in images with no libc at all (`FROM scratch`, busybox-static), so it is a
//! `no_std` binary linked statically against glibc (see build.rs), with no dependencies.
//!
//! Every call into libc is `unsafe`; each block says why it holds (`SAFETY:`). This file is
//! not a Cargo target (build.rs compiles it with rustc directly), so the library's
//! `#![deny(unsafe_code)]` does not reach it, and here it could not hold anyway.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::vec::Vec;
use core::ffi::{c_char, c_int, c_void};

unsafe extern "C" {
    static mut environ: *const *const c_char;
    fn open(path: *const c_char, flags: c_int, ...) -> c_int;
    fn read(fd: c_int, buf: *mut c_void, n: usize) -> isize;
    fn write(fd: c_int, buf: *const c_void, n: usize) -> isize;
    fn close(fd: c_int) -> c_int;
    fn unlink(path: *const c_char) -> c_int;
    fn execvp(file: *const c_char, argv: *const *const c_char) -> c_int;
    fn strerror(errnum: c_int) -> *const c_char;
    fn strlen(s: *const c_char) -> usize;
    fn malloc(n: usize) -> *mut c_void;
    fn free(p: *mut c_void);
    fn realloc(p: *mut c_void, n: usize) -> *mut c_void;
    fn __errno_location() -> *mut c_int;
    fn _exit(code: c_int) -> !;
}

const O_RDONLY: c_int = 0;
const O_NOFOLLOW: c_int = 0o400000;
const O_CLOEXEC: c_int = 0o2000000;
const EINTR: c_int = 4;
const ENOENT: c_int = 2;
/// Larger hand-off files are refused (the tmpfs is capped far below this anyway).
const MAX_ENV_FILE: usize = 64 << 20;

struct Malloc;

// SAFETY: malloc/free/realloc are glibc's allocator, whose blocks are 16-byte aligned (more
// than any Layout used here asks) and live until freed; null reports failure as GlobalAlloc wants.
unsafe impl core::alloc::GlobalAlloc for Malloc {
    unsafe fn alloc(&self, layout: core::alloc::Layout) -> *mut u8 {
        // SAFETY: glibc's malloc aligns to 16 bytes, enough for everything allocated here.
        unsafe { malloc(layout.size()) as *mut u8 }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: core::alloc::Layout) {
        // SAFETY: `ptr` came from `alloc`/`realloc` above (GlobalAlloc's contract).
        unsafe { free(ptr as *mut c_void) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, _l: core::alloc::Layout, new: usize) -> *mut u8 {
        // SAFETY: `ptr` came from this allocator; realloc keeps malloc's alignment.
        unsafe { realloc(ptr as *mut c_void, new) as *mut u8 }
    }
}

#[global_allocator]
static ALLOC: Malloc = Malloc;

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    say(&[b"dso-init: internal error"]);
    // SAFETY: _exit takes a plain int and never returns.
    unsafe { _exit(127) }
}

/// Referenced by the precompiled core library even with panic=abort.
#[unsafe(no_mangle)]
pub extern "C" fn rust_eh_personality() {}

fn errno() -> c_int {
    // SAFETY: glibc returns this thread's errno slot, valid for the life of the thread.
    unsafe { *__errno_location() }
}

/// Writes the parts and a newline to stderr.
fn say(parts: &[&[u8]]) {
    for p in parts {
        // SAFETY: the pointer and length describe the live slice `p`.
        unsafe { write(2, p.as_ptr() as *const c_void, p.len()) };
    }
    // SAFETY: a static one-byte buffer.
    unsafe { write(2, b"\n".as_ptr() as *const c_void, 1) };
}

fn cstr<'a>(p: *const c_char) -> &'a [u8] {
    if p.is_null() {
        return b"";
    }
    // SAFETY: callers pass NUL-terminated strings that outlive the use (argv, environ,
    // strerror's static text); strlen bounds the slice at the NUL.
    unsafe { core::slice::from_raw_parts(p as *const u8, strlen(p)) }
}

fn fail(what: &[u8], subject: *const c_char, err: c_int, code: c_int) -> ! {
    say(&[
        b"dso-init: ",
        what,
        b" ",
        cstr(subject),
        b": ",
        // SAFETY: strerror returns a NUL-terminated static string for any errno value.
        cstr(unsafe { strerror(err) }),
    ]);
    // SAFETY: _exit takes a plain int and never returns.
    unsafe { _exit(code) }
}

/// Overwrites a buffer that held secret values before it is freed.
fn wipe(buf: &mut [u8]) {
    for b in buf.iter_mut() {
        // SAFETY: `b` is a valid, exclusive reference into the buffer.
        unsafe { core::ptr::write_volatile(b, 0) };
    }
    core::sync::atomic::compiler_fence(core::sync::atomic::Ordering::SeqCst);
}

/// Reads the whole hand-off file.
fn read_env_file(path: *const c_char) -> Vec<u8> {
    // SAFETY: `path` is argv[1], a NUL-terminated string; open copies it.
    let fd = unsafe { open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC) };
    if fd < 0 {
        fail(b"cannot open", path, errno(), 127);
    }
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    loop {
        if buf.capacity() - buf.len() < 4096 {
            // Grow into a fresh buffer and wipe the old one: no stale copy of a value is left.
            let mut bigger = Vec::with_capacity(buf.capacity() * 2);
            bigger.extend_from_slice(&buf);
            wipe(&mut buf);
            buf = bigger;
        }
        let spare = buf.capacity() - buf.len();
        // SAFETY: the destination is the `spare` uninitialised bytes past `len` that the
        // Vec owns; read writes at most that many.
        let n = unsafe { read(fd, buf.as_mut_ptr().add(buf.len()) as *mut c_void, spare) };
        if n < 0 {
            if errno() == EINTR {
                continue;
            }
            fail(b"cannot read", path, errno(), 127);
        }
        if n == 0 {
            break;
        }
        // SAFETY: read just initialised `n` (<= spare) bytes past the old length.
        unsafe { buf.set_len(buf.len() + n as usize) };
        if buf.len() > MAX_ENV_FILE {
            say(&[b"dso-init: ", cstr(path), b" is too large"]);
            // SAFETY: _exit takes a plain int and never returns.
            unsafe { _exit(127) }
        }
    }
    // SAFETY: `fd` is the descriptor opened above, closed once.
    unsafe { close(fd) };
    buf
}

/// The variable name of a `VAR=value` record.
fn var_of(rec: &[u8]) -> &[u8] {
    match rec.iter().position(|&b| b == b'=') {
        Some(i) => &rec[..i],
        None => rec,
    }
}

/// The C entry point.
///
/// # Safety
/// Called by the C runtime with a valid `argv` of `argc` entries.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn main(
    argc: c_int,
    argv: *const *const c_char,
    _envp: *const *const c_char,
) -> c_int {
    if argc < 3 {
        say(&[b"usage: dso-init ENV_FILE COMMAND [ARG...]"]);
        return 127;
    }
    // SAFETY: argc >= 3, so argv[1] is a valid pointer (the C runtime's contract).
    let env_path = unsafe { *argv.add(1) };
    let mut records = read_env_file(env_path);
    // The value must not stay readable in the container's tmpfs once it is in our memory.
    // SAFETY: env_path is argv[1], NUL-terminated.
    if unsafe { unlink(env_path) } != 0 {
        let e = errno();
        wipe(&mut records);
        fail(b"cannot remove", env_path, e, 127);
    }

    if records.last().is_some_and(|&b| b != 0) {
        wipe(&mut records);
        say(&[b"dso-init: ", cstr(env_path), b" is malformed"]);
        // SAFETY: _exit takes a plain int and never returns.
        unsafe { _exit(127) }
    }

    // New environment: the old one with each record's variable replaced, plus new variables.
    let mut recs: Vec<&[u8]> = records
        .split(|&b| b == 0)
        .filter(|r| !r.is_empty())
        .collect();
    let mut env: Vec<*const c_char> = Vec::new();
    // SAFETY (this loop): environ is the C runtime's NULL-terminated array of NUL-terminated
    // strings; single-threaded, nobody changes it while we walk it, and `p` stops at the NULL.
    let mut p = unsafe { environ };
    while !p.is_null() && !unsafe { *p }.is_null() {
        // SAFETY: as above.
        let old = cstr(unsafe { *p });
        let old_var = var_of(old);
        match recs.iter().position(|r| var_of(r) == old_var) {
            // Every record is followed by its NUL in `records`, so it is a C string in place.
            Some(i) => env.push(recs.remove(i).as_ptr() as *const c_char),
            // SAFETY: as above.
            None => env.push(unsafe { *p }),
        }
        // SAFETY: `*p` was not the terminating NULL, so p + 1 is still inside the array.
        p = unsafe { p.add(1) };
    }
    for r in recs {
        env.push(r.as_ptr() as *const c_char);
    }
    env.push(core::ptr::null());
    // execvp looks COMMAND up in the PATH of `environ`, so switch before exec.
    // SAFETY: `env` is NULL-terminated and its strings (in `records` and the old environ) stay
    // alive across execvp, which either replaces the process or returns; argv[2..] is the
    // C runtime's NULL-terminated tail (argc >= 3). Single-threaded: nothing else reads environ.
    unsafe {
        environ = env.as_ptr();
        execvp(*argv.add(2), argv.add(2));
    }
    let e = errno();
    wipe(&mut records);
    fail(
        b"cannot run",
        // SAFETY: argc >= 3, so argv[2] is valid.
        unsafe { *argv.add(2) },
        e,
        if e == ENOENT { 127 } else { 126 },
    )
}
