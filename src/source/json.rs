//! JSON strings written by hand, byte for byte as serde_json writes them: the event entries are
//! serialized once per record or message read, where going through serde's `Serialize` (or a
//! `serde_json::Value`) cost a large share of the CPU. Shared by the Kinesis and SQS encoders.

/// Writes `s` as a JSON string, quoted and escaped as serde_json writes it.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    out.reserve(s.len() + 2);
    out.push(b'"');
    write_escaped(out, s);
    out.push(b'"');
}

/// Whether serde_json escapes byte `b` in a string: the control characters, `"` and `\`.
#[inline]
fn escaped(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

/// Bytes checked at once for anything to escape (branch-free, so the check vectorizes).
const CHUNK: usize = 32;

/// Writes the contents of `s` as a JSON string's, escaped as serde_json escapes them (no quotes
/// around): runs with nothing to escape are copied whole, `\b \t \n \f \r \" \\` get their
/// short escapes and other control characters `\u00xx` (lowercase hex); everything else,
/// non-ASCII included, is written as it is.
pub fn write_escaped(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    out.reserve(bytes.len());
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        if let Some(chunk) = bytes.get(i..i + CHUNK) {
            if !chunk.iter().fold(false, |any, &b| any | escaped(b)) {
                i += CHUNK;
                continue;
            }
        }
        let end = (i + CHUNK).min(bytes.len());
        while i < end {
            let b = bytes[i];
            if escaped(b) {
                out.extend_from_slice(&bytes[start..i]);
                match b {
                    b'"' => out.extend_from_slice(b"\\\""),
                    b'\\' => out.extend_from_slice(b"\\\\"),
                    0x08 => out.extend_from_slice(b"\\b"),
                    0x09 => out.extend_from_slice(b"\\t"),
                    0x0a => out.extend_from_slice(b"\\n"),
                    0x0c => out.extend_from_slice(b"\\f"),
                    0x0d => out.extend_from_slice(b"\\r"),
                    _ => out.extend_from_slice(&[
                        b'\\',
                        b'u',
                        b'0',
                        b'0',
                        HEX[(b >> 4) as usize],
                        HEX[(b & 0xf) as usize],
                    ]),
                }
                start = i + 1;
            }
            i += 1;
        }
    }
    out.extend_from_slice(&bytes[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_escape_is_serdes() {
        let all: String = (0u8..0x80).map(char::from).collect::<String>() + "é\u{2028}😀\u{7f}";
        for s in [all.as_str(), "\"", "\\", "a\"b\\c\n", &all.repeat(3), ""] {
            let mut ours = Vec::new();
            write_str(&mut ours, s);
            assert_eq!(ours, serde_json::to_vec(s).unwrap(), "{s:?}");
        }
    }
}
