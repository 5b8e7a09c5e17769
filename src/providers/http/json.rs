//! Zeroizing JSON: parse response bodies with `&RawValue` fields borrowed from the body
//! (`#[serde(borrow)]`), then turn the pieces into values with these helpers.

use serde_json::value::RawValue;
use zeroize::Zeroizing;

use crate::secrets::SecretValue;

/// A raw JSON value as secret bytes: a string's text (unescaped), else compact JSON.
pub fn raw_json_value(raw: &RawValue) -> SecretValue {
    let text = raw.get();
    if text.starts_with('"') {
        if let Some(s) = json_string(raw) {
            let s: Zeroizing<String> = s;
            let mut bytes = Zeroizing::new(Vec::with_capacity(s.len()));
            bytes.extend_from_slice(s.as_bytes());
            return SecretValue::from_zeroizing(bytes);
        }
    }
    SecretValue::from_zeroizing(compact_json(text))
}

/// A JSON string's text in zeroizing memory. Borrowed straight from the (zeroizing) body when
/// it has no escapes; otherwise serde's unescaped copy is moved into `Zeroizing`.
pub fn json_string(raw: &RawValue) -> Option<Zeroizing<String>> {
    if let Ok(s) = serde_json::from_str::<&str>(raw.get()) {
        let mut out = Zeroizing::new(String::with_capacity(s.len()));
        out.push_str(s);
        return Some(out);
    }
    serde_json::from_str::<String>(raw.get())
        .ok()
        .map(Zeroizing::new)
}

/// Removes insignificant whitespace from JSON text, into zeroizing memory.
pub fn compact_json(text: &str) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(text.len()));
    let mut in_string = false;
    let mut escaped = false;
    for &b in text.as_bytes() {
        if in_string {
            out.push(b);
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if b == b'"' {
            in_string = true;
            out.push(b);
        } else if !matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
            out.push(b);
        }
    }
    out
}
