//! Keys and values on the command line and in the output.
//!
//! Humans read and type bytes as Rust byte-string escapes: printable ASCII as is,
//! `\n`, `\r`, `\t`, `\\`, `\'`, `\"`, and `\xNN` for every other byte. What `dump`
//! prints can be pasted back into `get`, `put` and `delete`. JSON output carries bytes
//! as lower-case hex.

use std::fmt::Write as _;

/// `bytes` as a Rust byte-string escape (`std::ascii::escape_default` per byte).
pub fn escape(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string()
}

/// `bytes` as lower-case hex, two digits per byte.
pub fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        write!(out, "{b:02x}").expect("writing to a String cannot fail");
    }
    out
}

/// The bytes a command-line argument stands for: its UTF-8 bytes with the escapes of
/// [`escape`] undone. `Err` names the first escape that is not one of them.
pub fn unescape(text: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(text.len());
    let mut rest = text.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        rest = tail;
        if b != b'\\' {
            out.push(b);
            continue;
        }
        let Some((&e, tail)) = rest.split_first() else {
            return Err("a lone `\\` at the end (write `\\\\` for a backslash)".into());
        };
        rest = tail;
        let byte = match e {
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'0' => 0,
            b'\\' | b'\'' | b'"' => e,
            b'x' => {
                let digits = rest.get(..2).filter(|d| d.iter().all(u8::is_ascii_hexdigit));
                let value = digits.and_then(|d| u8::from_str_radix(std::str::from_utf8(d).ok()?, 16).ok());
                let Some(value) = value else {
                    return Err("`\\x` must be followed by two hex digits".into());
                };
                rest = &rest[2..];
                value
            }
            other => {
                return Err(format!(
                    "unknown escape `\\{}` (known: \\n \\r \\t \\0 \\\\ \\' \\\" \\xNN)",
                    char::from(other).escape_default()
                ));
            }
        };
        out.push(byte);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_byte_round_trips_through_its_escape() {
        let all: Vec<u8> = (0..=255).collect();
        let text = escape(&all);
        assert!(text.is_ascii() && !text.contains('\t') && !text.contains('\n'));
        assert_eq!(unescape(&text).unwrap(), all);
    }

    #[test]
    fn unescape_takes_utf8_and_refuses_bad_escapes() {
        assert_eq!(unescape("é\\x00").unwrap(), vec![0xc3, 0xa9, 0]);
        assert!(unescape("a\\").is_err());
        assert!(unescape("\\x4").is_err());
        assert!(unescape("\\xzz").is_err());
        assert!(unescape("\\x+f").is_err());
        assert!(unescape("\\q").unwrap_err().contains("\\q"));
    }

    #[test]
    fn hex_is_two_lower_case_digits_per_byte() {
        assert_eq!(hex(&[0, 0xab, 0x10]), "00ab10");
    }
}
