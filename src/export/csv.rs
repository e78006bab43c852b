//! CSV for machine reuse: UTF-8 without BOM, comma-separated, CRLF line ends, fields quoted as
//! RFC 4180 says (when they hold a comma, a quote, CR or LF; quotes doubled).
//!
//! Values are the database's own: integers and reals exact (reals in Rust's shortest round-trip
//! form, `inf`, `-inf`, `NaN`), text verbatim (whatever it starts with), NULL as an empty field
//! and the empty string as `""`, so the two stay apart. BLOBs are the path of their side file.

use std::io::{self, Write};

pub struct CsvWriter<W: Write> {
    out: W,
    first: bool,
}

impl<W: Write> CsvWriter<W> {
    pub fn new(out: W) -> CsvWriter<W> {
        CsvWriter { out, first: true }
    }

    fn sep(&mut self) -> io::Result<()> {
        if !self.first {
            self.out.write_all(b",")?;
        }
        self.first = false;
        Ok(())
    }

    pub fn null(&mut self) -> io::Result<()> {
        self.sep()
    }

    pub fn integer(&mut self, i: i64) -> io::Result<()> {
        self.sep()?;
        write!(self.out, "{i}")
    }

    pub fn real(&mut self, f: f64) -> io::Result<()> {
        self.sep()?;
        if f.is_nan() {
            self.out.write_all(b"NaN")
        } else {
            // Debug is Rust's shortest representation that reads back to the same bits, with an
            // exponent for very large and very small values (1e300, 5e-324) and `inf`.
            write!(self.out, "{f:?}")
        }
    }

    pub fn text(&mut self, t: &str) -> io::Result<()> {
        self.sep()?;
        if !t.is_empty() && !t.bytes().any(|b| matches!(b, b',' | b'"' | b'\r' | b'\n')) {
            return self.out.write_all(t.as_bytes());
        }
        self.out.write_all(b"\"")?;
        let mut rest = t;
        while let Some(i) = rest.find('"') {
            self.out.write_all(&rest.as_bytes()[..=i])?;
            self.out.write_all(b"\"")?;
            rest = &rest[i + 1..];
        }
        self.out.write_all(rest.as_bytes())?;
        self.out.write_all(b"\"")
    }

    pub fn end_row(&mut self) -> io::Result<()> {
        self.first = true;
        self.out.write_all(b"\r\n")
    }

    pub fn into_inner(self) -> W {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4180_fields() {
        let mut w = CsvWriter::new(Vec::new());
        w.text("plain").unwrap();
        w.text("a,b").unwrap();
        w.text("say \"hi\"").unwrap();
        w.text("two\nlines").unwrap();
        w.text("").unwrap();
        w.null().unwrap();
        w.integer(-5).unwrap();
        w.real(0.1).unwrap();
        w.real(f64::MAX).unwrap();
        w.real(f64::NEG_INFINITY).unwrap();
        w.real(f64::NAN).unwrap();
        w.real(-0.0).unwrap();
        w.text("=SOMMA(A1:A3)").unwrap();
        w.end_row().unwrap();
        w.null().unwrap();
        w.end_row().unwrap();
        let s = String::from_utf8(w.into_inner()).unwrap();
        assert_eq!(
            s,
            "plain,\"a,b\",\"say \"\"hi\"\"\",\"two\nlines\",\"\",,-5,0.1,1.7976931348623157e308,-inf,NaN,-0.0,=SOMMA(A1:A3)\r\n\r\n"
        );
    }
}
