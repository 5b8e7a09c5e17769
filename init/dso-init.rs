//! dso-init: the first process of a container that uses env references.
//!
//! `dso-init ENV_FILE CMD [ARGS...]`: reads `VAR=value\0` records from ENV_FILE (written by
//! dso-runc into the container's secrets tmpfs), unlinks it, sets the variables and `execvp`s
//! CMD with the original argv, so the user's command keeps PID 1.
//!
//! It must run in images with no libc at all (`FROM scratch`, busybox-static), so it is a
//! `no_std` binary linked statically against glibc (see build.rs), with no dependencies.
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

unsafe impl core::alloc::GlobalAlloc for Malloc {
    unsafe fn alloc(&self, layout: core::alloc::Layout) -> *mut u8 {
        // glibc's malloc aligns to 16 bytes, enough for everything allocated here.
        unsafe { malloc(layout.size()) as *mut u8 }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: core::alloc::Layout) {
        unsafe { free(ptr as *mut c_void) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, _l: core::alloc::Layout, new: usize) -> *mut u8 {
        unsafe { realloc(ptr as *mut c_void, new) as *mut u8 }
    }
}

#[global_allocator]
static ALLOC: Malloc = Malloc;

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    say(&[b"dso-init: internal error"]);
    unsafe { _exit(127) }
}

/// Referenced by the precompiled core library even with panic=abort.
#[unsafe(no_mangle)]
pub extern "C" fn rust_eh_personality() {}

fn errno() -> c_int {
    unsafe { *__errno_location() }
}

/// Writes the parts and a newline to stderr.
fn say(parts: &[&[u8]]) {
    for p in parts {
        unsafe { write(2, p.as_ptr() as *const c_void, p.len()) };
    }
    unsafe { write(2, b"\n".as_ptr() as *const c_void, 1) };
}

fn cstr<'a>(p: *const c_char) -> &'a [u8] {
    if p.is_null() {
        return b"";
    }
    unsafe { core::slice::from_raw_parts(p as *const u8, strlen(p)) }
}

fn fail(what: &[u8], subject: *const c_char, err: c_int, code: c_int) -> ! {
    say(&[
        b"dso-init: ",
        what,
        b" ",
        cstr(subject),
        b": ",
        cstr(unsafe { strerror(err) }),
    ]);
    unsafe { _exit(code) }
}

/// Overwrites a buffer that held secret values before it is freed.
fn wipe(buf: &mut [u8]) {
    for b in buf.iter_mut() {
        unsafe { core::ptr::write_volatile(b, 0) };
    }
    core::sync::atomic::compiler_fence(core::sync::atomic::Ordering::SeqCst);
}

/// Reads the whole hand-off file.
fn read_env_file(path: *const c_char) -> Vec<u8> {
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
        unsafe { buf.set_len(buf.len() + n as usize) };
        if buf.len() > MAX_ENV_FILE {
            say(&[b"dso-init: ", cstr(path), b" is too large"]);
            unsafe { _exit(127) }
        }
    }
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
    let env_path = unsafe { *argv.add(1) };
    let mut records = read_env_file(env_path);
    // The value must not stay readable in the container's tmpfs once it is in our memory.
    if unsafe { unlink(env_path) } != 0 {
        let e = errno();
        wipe(&mut records);
        fail(b"cannot remove", env_path, e, 127);
    }

    if records.last().is_some_and(|&b| b != 0) {
        wipe(&mut records);
        say(&[b"dso-init: ", cstr(env_path), b" is malformed"]);
        unsafe { _exit(127) }
    }

    // New environment: the old one with each record's variable replaced, plus new variables.
    let mut recs: Vec<&[u8]> = records
        .split(|&b| b == 0)
        .filter(|r| !r.is_empty())
        .collect();
    let mut env: Vec<*const c_char> = Vec::new();
    let mut p = unsafe { environ };
    while !p.is_null() && !unsafe { *p }.is_null() {
        let old = cstr(unsafe { *p });
        let old_var = var_of(old);
        match recs.iter().position(|r| var_of(r) == old_var) {
            // Every record is followed by its NUL in `records`, so it is a C string in place.
            Some(i) => env.push(recs.remove(i).as_ptr() as *const c_char),
            None => env.push(unsafe { *p }),
        }
        p = unsafe { p.add(1) };
    }
    for r in recs {
        env.push(r.as_ptr() as *const c_char);
    }
    env.push(core::ptr::null());
    // execvp looks COMMAND up in the PATH of `environ`, so switch before exec.
    unsafe {
        environ = env.as_ptr();
        execvp(*argv.add(2), argv.add(2));
    }
    let e = errno();
    wipe(&mut records);
    fail(
        b"cannot run",
        unsafe { *argv.add(2) },
        e,
        if e == ENOENT { 127 } else { 126 },
    )
}
