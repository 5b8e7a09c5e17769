//! Reading a secret typed at a terminal: no echo, the line edited by dso itself (Backspace,
//! Ctrl-U, Ctrl-C cancels, Ctrl-D ends an empty entry), the terminal's settings restored on
//! every way out. Ctrl-C is read as a byte rather than delivered as SIGINT, so the process is
//! never killed with echo still off.

use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd};

use anyhow::{anyhow, bail};
use nix::sys::termios::{self, LocalFlags, SetArg, SpecialCharacterIndices, Termios};
use zeroize::Zeroizing;

use crate::providers::local::MAX_VALUE_LEN;

/// Asks for the value of `name` twice (not echoed); they must match. The Enter that ends it is
/// dropped unless `keep_newline`.
pub(super) fn read_secret_twice(
    name: &str,
    keep_newline: bool,
) -> anyhow::Result<Zeroizing<Vec<u8>>> {
    let stdin = io::stdin();
    let fd = stdin.as_fd();
    let _quiet = Quiet::enter(fd).map_err(|e| anyhow!("cannot turn off echo on stdin: {e}"))?;
    prompt(&format!(
        "dso: value of {name:?} (not echoed; Enter ends it): "
    ));
    let first = read_line(fd, keep_newline)?;
    prompt("dso: the same again: ");
    let second = read_line(fd, keep_newline)?;
    if first != second {
        bail!("the two entries of {name:?} differ; nothing stored");
    }
    Ok(first)
}

fn prompt(text: &str) {
    let mut err = io::stderr();
    let _ = err.write_all(text.as_bytes());
    let _ = err.flush();
}

/// The terminal without echo, line editing or signal keys; the old settings come back on drop.
struct Quiet<'a> {
    fd: BorrowedFd<'a>,
    saved: Termios,
}

impl<'a> Quiet<'a> {
    fn enter(fd: BorrowedFd<'a>) -> nix::Result<Quiet<'a>> {
        let saved = termios::tcgetattr(fd)?;
        let mut quiet = saved.clone();
        quiet.local_flags.remove(
            LocalFlags::ECHO
                | LocalFlags::ECHONL
                | LocalFlags::ICANON
                | LocalFlags::ISIG
                | LocalFlags::IEXTEN,
        );
        quiet.control_chars[SpecialCharacterIndices::VMIN as usize] = 1;
        quiet.control_chars[SpecialCharacterIndices::VTIME as usize] = 0;
        termios::tcsetattr(fd, SetArg::TCSAFLUSH, &quiet)?;
        Ok(Quiet { fd, saved })
    }
}

impl Drop for Quiet<'_> {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(self.fd, SetArg::TCSANOW, &self.saved);
    }
}

/// One line, byte by byte, into zeroizing memory.
fn read_line(fd: BorrowedFd<'_>, keep_newline: bool) -> anyhow::Result<Zeroizing<Vec<u8>>> {
    let mut line = Zeroizing::new(Vec::with_capacity(256));
    loop {
        let mut b = [0u8; 1];
        let n = match nix::unistd::read(std::os::fd::AsRawFd::as_raw_fd(&fd), &mut b) {
            Ok(n) => n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => bail!("cannot read the terminal: {e}"),
        };
        match (n, b[0]) {
            (0, _) | (_, 0x04) if line.is_empty() => break, // EOF, Ctrl-D
            (0, _) => break,
            (_, 0x03) => {
                prompt("\n");
                bail!("cancelled; nothing stored");
            }
            (_, b'\n' | b'\r') => {
                if keep_newline {
                    push(&mut line, b'\n')?;
                }
                break;
            }
            (_, 0x7f | 0x08) => {
                // Backspace: one character, i.e. a UTF-8 lead byte and its continuations.
                while let Some(last) = line.pop() {
                    if last & 0xc0 != 0x80 {
                        break;
                    }
                }
            }
            (_, 0x15) => line.clear(), // Ctrl-U
            (_, byte) => push(&mut line, byte)?,
        }
    }
    prompt("\n");
    Ok(line)
}

/// Appends a byte; growing copies into a new zeroizing buffer, leaving no stale copy behind.
fn push(line: &mut Zeroizing<Vec<u8>>, byte: u8) -> anyhow::Result<()> {
    if line.len() > MAX_VALUE_LEN {
        bail!("the value is larger than {MAX_VALUE_LEN} bytes; nothing stored");
    }
    if line.len() == line.capacity() {
        let mut bigger = Zeroizing::new(Vec::with_capacity(line.capacity() * 2));
        bigger.extend_from_slice(line);
        *line = bigger;
    }
    line.push(byte);
    Ok(())
}
