//! Form and URL path encoding, in zeroizing memory where it may hold a credential.

use zeroize::Zeroizing;

/// `application/x-www-form-urlencoded` of `pairs`, built in zeroizing memory sized up front (so
/// it never reallocates and leaves a copy of a credential behind).
pub fn form_urlencode(pairs: &[(&str, &str)]) -> Zeroizing<String> {
    let cap: usize = pairs.iter().map(|(k, v)| 3 * (k.len() + v.len()) + 2).sum();
    let mut out = Zeroizing::new(String::with_capacity(cap));
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        percent_encode_form(k, &mut out);
        out.push('=');
        percent_encode_form(v, &mut out);
    }
    out
}

/// Appends the form encoding of `s` (the pieces go straight into `out`, which never grows).
fn percent_encode_form(s: &str, out: &mut String) {
    for piece in form_urlencoded::byte_serialize(s.as_bytes()) {
        out.push_str(piece);
    }
}

/// RFC 3986's unreserved characters are kept; everything else is `%XX`.
pub(crate) const NOT_UNRESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes one URL path segment (everything but unreserved characters).
pub fn encode_path_segment(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, NOT_UNRESERVED).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_encoding() {
        assert_eq!(
            form_urlencode(&[
                ("scope", "https://vault.azure.net/.default"),
                ("a b", "c&d")
            ])
            .as_str(),
            "scope=https%3A%2F%2Fvault.azure.net%2F.default&a+b=c%26d"
        );
        assert_eq!(encode_path_segment("a b/c"), "a%20b%2Fc");
    }
}
