//! The log's writer: one event is one line, whatever its message and fields hold.
//!
//! tracing-subscriber's fmt layer escapes ANSI escape sequences in values (ESC, BEL, BS, FF,
//! DEL, C1 codes) but writes CR and LF as they are, so a value such as a URL's study UID
//! holding `%0d%0a` could forge a log line. [`Escaping`] sits between the formatter and stderr:
//! each formatted event arrives in one write, and every control character in it but the final
//! newline (and tab, and the ESC of the formatter's own colours when they are on) is written as
//! an escape (`\r`, `\n`, `\x0b`).

use std::io::{self, Write};

use tracing_subscriber::fmt::MakeWriter;

/// Makes [`EscapingWriter`]s over what `inner` makes.
pub struct Escaping<M> {
    inner: M,
    /// Whether the formatter writes colours (its ESC bytes are kept; values' ESC it escapes).
    ansi: bool,
}

impl<M> Escaping<M> {
    pub fn new(inner: M, ansi: bool) -> Escaping<M> {
        Escaping { inner, ansi }
    }
}

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for Escaping<M> {
    type Writer = EscapingWriter<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        EscapingWriter {
            inner: self.inner.make_writer(),
            ansi: self.ansi,
        }
    }
}

pub struct EscapingWriter<W> {
    inner: W,
    ansi: bool,
}

/// `event` with every control character but a final newline, tabs and (with `ansi`) ESC
/// escaped.
pub fn escape_line(event: &[u8], ansi: bool) -> Vec<u8> {
    let (body, end) = match event.strip_suffix(b"\n") {
        Some(body) => (body, &b"\n"[..]),
        None => (event, &b""[..]),
    };
    let mut out = Vec::with_capacity(event.len() + 8);
    for &b in body {
        match b {
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\t' => out.push(b),
            0x1b if ansi => out.push(b),
            0x00..=0x1f | 0x7f => out.extend_from_slice(format!("\\x{b:02x}").as_bytes()),
            _ => out.push(b),
        }
    }
    out.extend_from_slice(end);
    out
}

impl<W: Write> Write for EscapingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write_all(&escape_line(buf, self.ansi))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| io::Error::other("poisoned"))?
                .extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn logged(escaping: bool) -> String {
        let captured = Captured::default();
        let sink = captured.clone();
        let make = move || sink.clone();
        let event = || {
            let uid = "1.2\r\nX-Injected: 1";
            tracing::warn!(study = %uid, "STOW-RS {uid}");
        };
        if escaping {
            let subscriber = tracing_subscriber::fmt()
                .with_writer(Escaping::new(make, false))
                .with_ansi(false)
                .finish();
            tracing::subscriber::with_default(subscriber, event);
        } else {
            let subscriber = tracing_subscriber::fmt()
                .with_writer(make)
                .with_ansi(false)
                .finish();
            tracing::subscriber::with_default(subscriber, event);
        }
        let bytes = captured.0.lock().expect("not poisoned").clone();
        String::from_utf8(bytes).expect("UTF-8")
    }

    /// The fmt layer alone forges a line from a CR LF in a value; through [`Escaping`] the event
    /// stays one line with the CR LF visible as `\r\n`.
    #[test]
    fn a_crlf_in_a_logged_value_cannot_forge_a_line() {
        let raw = logged(false);
        assert!(
            raw.lines().any(|l| l.starts_with("X-Injected")),
            "tracing-subscriber writes CR LF raw: {raw:?}"
        );
        let escaped = logged(true);
        assert_eq!(escaped.matches('\n').count(), 1, "{escaped:?}");
        assert!(escaped.ends_with('\n'), "{escaped:?}");
        assert!(
            escaped.contains("STOW-RS 1.2\\r\\nX-Injected: 1")
                && escaped.contains("study=1.2\\r\\nX-Injected: 1"),
            "{escaped:?}"
        );
    }

    #[test]
    fn control_characters_are_escaped_and_tabs_and_colours_kept() {
        assert_eq!(escape_line(b"a\x0bb\tc\x7f\n", false), b"a\\x0bb\tc\\x7f\n");
        assert_eq!(
            escape_line(b"\x1b[31mred\x1b[0m\n", true),
            b"\x1b[31mred\x1b[0m\n"
        );
        assert_eq!(escape_line(b"\x1b\n", false), b"\\x1b\n");
        assert_eq!(escape_line(b"no newline\r", false), b"no newline\\r");
    }
}
