//! The canonical row encoding. Each value is a tag byte and its payload; a row is its values in
//! column order (the column count is in the catalog entry, so rows need no delimiter):
//!
//! ```text
//! 0x00                      NULL
//! 0x01 i64 LE (8 bytes)     INTEGER
//! 0x02 f64 bits LE (8)      REAL (bits, so -0.0 and extremes survive)
//! 0x03 len (LEB128) bytes   TEXT (bytes as stored, even if not valid UTF-8)
//! 0x04 len (LEB128) bytes   BLOB
//! ```

use rusqlite::types::ValueRef;

pub fn encode(v: ValueRef<'_>, out: &mut Vec<u8>) {
    match v {
        ValueRef::Null => out.push(0),
        ValueRef::Integer(i) => {
            out.push(1);
            out.extend_from_slice(&i.to_le_bytes());
        }
        ValueRef::Real(f) => {
            out.push(2);
            out.extend_from_slice(&f.to_bits().to_le_bytes());
        }
        ValueRef::Text(t) => {
            out.push(3);
            leb128(t.len() as u64, out);
            out.extend_from_slice(t);
        }
        ValueRef::Blob(b) => {
            out.push(4);
            leb128(b.len() as u64, out);
            out.extend_from_slice(b);
        }
    }
}

fn leb128(mut n: u64, out: &mut Vec<u8>) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("the row stream is malformed at byte {offset}: {what}")]
pub struct DecodeError {
    pub offset: usize,
    pub what: &'static str,
}

/// Decode one value from `buf`. `Ok(None)` means more bytes are needed.
pub fn decode(buf: &[u8]) -> Result<Option<(ValueRef<'_>, usize)>, DecodeError> {
    let Some(&tag) = buf.first() else {
        return Ok(None);
    };
    let fixed = |n: usize| buf.get(1..1 + n);
    Ok(match tag {
        0 => Some((ValueRef::Null, 1)),
        1 => fixed(8).map(|b| (ValueRef::Integer(i64::from_le_bytes(b.try_into().expect("8"))), 9)),
        2 => fixed(8).map(|b| (ValueRef::Real(f64::from_bits(u64::from_le_bytes(b.try_into().expect("8")))), 9)),
        3 | 4 => {
            let mut len = 0u64;
            let mut i = 1;
            loop {
                let Some(&b) = buf.get(i) else {
                    return Ok(None);
                };
                if i > 10 {
                    return Err(DecodeError { offset: i, what: "length is too long" });
                }
                len |= ((b & 0x7f) as u64) << (7 * (i - 1));
                i += 1;
                if b & 0x80 == 0 {
                    break;
                }
            }
            let end = i.checked_add(len as usize).ok_or(DecodeError { offset: i, what: "length overflows" })?;
            buf.get(i..end).map(|b| (if tag == 3 { ValueRef::Text(b) } else { ValueRef::Blob(b) }, end))
        }
        _ => return Err(DecodeError { offset: 0, what: "unknown value tag" }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rusqlite::types::Value;

    fn value() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<i64>().prop_map(Value::Integer),
            any::<f64>().prop_map(Value::Real),
            ".{0,300}".prop_map(Value::Text),
            proptest::collection::vec(any::<u8>(), 0..300).prop_map(Value::Blob),
        ]
    }

    proptest! {
        #[test]
        fn round_trip_and_partial_input(values in proptest::collection::vec(value(), 0..20)) {
            let mut buf = Vec::new();
            for v in &values {
                encode(ValueRef::from(v), &mut buf);
            }
            let mut pos = 0;
            for v in &values {
                // Every strict prefix of a value asks for more bytes rather than misreading.
                let (got, n) = decode(&buf[pos..]).unwrap().unwrap();
                for cut in 0..n {
                    prop_assert!(decode(&buf[pos..pos + cut]).unwrap().is_none());
                }
                let want = ValueRef::from(v);
                match (got, want) {
                    (ValueRef::Real(a), ValueRef::Real(b)) => prop_assert_eq!(a.to_bits(), b.to_bits()),
                    (a, b) => prop_assert_eq!(a, b),
                }
                pos += n;
            }
            prop_assert_eq!(pos, buf.len());
        }
    }
}
