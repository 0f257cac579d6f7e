//! A command's output on stdout, through [`out!`]: `println!` that ends the command quietly,
//! with exit code 0, when the reader went away (`scim-sync status | head`), instead of
//! panicking on the broken pipe (Rust ignores SIGPIPE, and this crate forbids the `unsafe`
//! that would restore it). Other write errors are reported on stderr once, as `println!`'s
//! panic would have, and the command goes on.

use std::fmt;
use std::io::{ErrorKind, Write};
use std::sync::atomic::{AtomicBool, Ordering};

/// Writes one line of output (what [`out!`] expands to).
pub fn line(args: fmt::Arguments<'_>) {
    let mut stdout = std::io::stdout().lock();
    let written = stdout
        .write_fmt(args)
        .and_then(|()| stdout.write_all(b"\n"));
    if let Err(e) = written {
        if e.kind() == ErrorKind::BrokenPipe {
            let _ = stdout.flush();
            std::process::exit(0);
        }
        static REPORTED: AtomicBool = AtomicBool::new(false);
        if !REPORTED.swap(true, Ordering::Relaxed) {
            eprintln!("scim-sync: cannot write to stdout: {e}");
        }
    }
}
