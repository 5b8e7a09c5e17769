//! AWS Signature Version 4 (header form, `AWS4-HMAC-SHA256`) through the `aws-sigv4` crate's
//! synchronous signer, checked against AWS's published test suite.
//!
//! The caller names every header to sign (`host` included); the signer adds `x-amz-date`. A
//! session token is signed as one of the request's headers (as STS expects), so dso keeps its
//! only copy in a zeroizing string.

use std::fmt;
use std::time::SystemTime;

use aws_sigv4::http_request::{self as signer, PercentEncodingMode, SignableBody, SigningSettings};
use zeroize::Zeroizing;

use super::credentials::Credentials;

/// Why a request could not be signed (a path or header that is not valid HTTP).
pub type SignError = Box<dyn std::error::Error + Send + Sync>;

/// What is signed: method, unencoded path, query pairs (unencoded), headers and body.
#[derive(Debug, Clone, Copy)]
pub struct SignableRequest<'a> {
    pub method: &'a str,
    /// The path as the application means it (`/`, `/example space/`); the signer encodes it.
    pub path: &'a str,
    /// Query parameters, unencoded; order does not matter.
    pub query: &'a [(&'a str, &'a str)],
    /// Headers to sign, `host` among them. Names in any case; repeated names are joined.
    pub headers: &'a [(&'a str, &'a str)],
    pub payload: &'a [u8],
}

/// Where and when: the credential scope and the signing time.
#[derive(Debug, Clone, Copy)]
pub struct SigningParams<'a> {
    pub region: &'a str,
    pub service: &'a str,
    pub time: SystemTime,
}

/// The headers to add to the request. `Debug` hides the session token.
pub struct SignedHeaders {
    /// `X-Amz-Date`, `YYYYMMDD'T'HHMMSS'Z'`.
    pub amz_date: String,
    /// `X-Amz-Security-Token`, for temporary credentials.
    pub security_token: Option<Zeroizing<String>>,
    /// `Authorization`.
    pub authorization: String,
}

impl fmt::Debug for SignedHeaders {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignedHeaders")
            .field("amz_date", &self.amz_date)
            .field(
                "security_token",
                &self.security_token.as_ref().map(|_| "[redacted]"),
            )
            .field("authorization", &self.authorization)
            .finish()
    }
}

/// Signs `req` with `creds`: the headers to add to it.
pub fn sign(
    req: &SignableRequest<'_>,
    creds: &Credentials,
    params: &SigningParams<'_>,
) -> Result<SignedHeaders, SignError> {
    let token = creds.session_token().map(|t| Zeroizing::new(t.to_string()));
    let mut headers: Vec<(&str, &str)> = req.headers.to_vec();
    if let Some(t) = &token {
        headers.push(("x-amz-security-token", t.as_str()));
    }
    let mut uri = match uri_encode(req.path, false) {
        p if p.is_empty() => "/".to_string(),
        p => p,
    };
    for (i, (k, v)) in req.query.iter().enumerate() {
        uri.push(if i == 0 { '?' } else { '&' });
        uri.push_str(&format!("{}={}", uri_encode(k, true), uri_encode(v, true)));
    }
    // The token travels as a signed header above, not through the signer's identity.
    let identity = aws_credential_types::Credentials::new(
        creds.access_key_id(),
        creds.secret_access_key(),
        None,
        None,
        "dso",
    )
    .into();
    let mut settings = SigningSettings::default();
    // The path is encoded once, here, from the application's unencoded one.
    settings.percent_encoding_mode = PercentEncodingMode::Single;
    let signing = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(params.region)
        .name(params.service)
        .time(params.time)
        .settings(settings)
        .build()?
        .into();
    let body = SignableBody::Bytes(req.payload);
    let signable = signer::SignableRequest::new(req.method, uri, headers.into_iter(), body)?;
    let (instructions, _) = signer::sign(signable, &signing)?.into_parts();
    let header = |name: &str| {
        instructions
            .headers()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.to_string())
            .ok_or_else(|| format!("the signer gave no {name} header"))
    };
    Ok(SignedHeaders {
        amz_date: header("x-amz-date")?,
        security_token: token,
        authorization: header("authorization")?,
    })
}

/// RFC 3986 percent-encoding as SigV4 wants it: everything but `A-Za-z0-9-_.~` (and `/` when
/// `encode_slash` is false) as `%XX` with upper-case hex.
fn uri_encode(s: &str, encode_slash: bool) -> String {
    use crate::providers::http::NOT_UNRESERVED;
    const KEEP_SLASH: &percent_encoding::AsciiSet = &NOT_UNRESERVED.remove(b'/');
    let set = if encode_slash {
        NOT_UNRESERVED
    } else {
        KEEP_SLASH
    };
    percent_encoding::utf8_percent_encode(s, set).to_string()
}

#[cfg(test)]
mod tests {
    //! Vectors from AWS's Signature Version 4 test suite (as kept in awslabs/aws-c-auth,
    //! `tests/aws-signing-test-suite/v4`, and the original suite's `post-x-www-form-urlencoded`):
    //! credentials AKIDEXAMPLE / wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY, us-east-1, service
    //! `service`, 2015-08-30T12:36:00Z.
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    const AKID: &str = "AKIDEXAMPLE";
    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
    const AMZ_DATE: &str = "20150830T123600Z";
    const SCOPE: &str = "20150830/us-east-1/service/aws4_request";
    const EMPTY_SHA: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn time() -> SystemTime {
        // 2015-08-30T12:36:00Z
        UNIX_EPOCH + Duration::from_secs(1_440_938_160)
    }

    fn params() -> SigningParams<'static> {
        SigningParams {
            region: "us-east-1",
            service: "service",
            time: time(),
        }
    }

    struct Vector {
        name: &'static str,
        method: &'static str,
        path: &'static str,
        query: &'static [(&'static str, &'static str)],
        /// Request headers, without x-amz-date (the signer adds it).
        headers: &'static [(&'static str, &'static str)],
        payload: &'static [u8],
        token: Option<&'static str>,
        creq: String,
        sts: &'static str,
        signature: &'static str,
    }

    fn check(v: &Vector) {
        use aws_sigv4::sign::v4::{calculate_signature, generate_signing_key};
        use sha2::{Digest, Sha256};
        let creds = Credentials::new(AKID, SECRET, v.token.map(str::to_string));
        // Step by step: the vector's string to sign is over its canonical request, and its
        // signature is that string signed with the derived key.
        let creq_sha = hex::encode(Sha256::digest(v.creq.as_bytes()));
        let sts = format!("AWS4-HMAC-SHA256\n{AMZ_DATE}\n{SCOPE}\n{creq_sha}");
        assert_eq!(sts, v.sts, "{}: string to sign", v.name);
        let key = generate_signing_key(SECRET, time(), "us-east-1", "service");
        let sig = calculate_signature(key, sts.as_bytes());
        assert_eq!(sig, v.signature, "{}: signature", v.name);
        let signed = v.creq.lines().rev().nth(1).unwrap_or_default();

        // And through `sign`, which adds x-amz-date and the token itself.
        let req = SignableRequest {
            method: v.method,
            path: v.path,
            query: v.query,
            headers: v.headers,
            payload: v.payload,
        };
        let out = sign(&req, &creds, &params()).unwrap();
        assert_eq!(out.amz_date, AMZ_DATE);
        assert_eq!(
            out.authorization,
            format!(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/{SCOPE}, SignedHeaders={signed}, Signature={}",
                v.signature
            ),
            "{}: authorization",
            v.name
        );
        assert_eq!(out.security_token.as_deref().map(String::as_str), v.token);
    }

    fn creq(method: &str, path: &str, query: &str, headers: &[&str], payload_sha: &str) -> String {
        let names: Vec<&str> = headers
            .iter()
            .map(|h| h.split(':').next().unwrap_or_default())
            .collect();
        format!(
            "{method}\n{path}\n{query}\n{}\n\n{}\n{payload_sha}",
            headers.join("\n"),
            names.join(";")
        )
    }

    #[test]
    fn get_vanilla() {
        check(&Vector {
            name: "get-vanilla",
            method: "GET",
            path: "/",
            query: &[],
            headers: &[("Host", "example.amazonaws.com")],
            payload: b"",
            token: None,
            creq: creq(
                "GET",
                "/",
                "",
                &["host:example.amazonaws.com", "x-amz-date:20150830T123600Z"],
                EMPTY_SHA,
            ),
            sts: "AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/service/aws4_request\nbb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63",
            signature: "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
        });
    }

    #[test]
    fn get_vanilla_query_order_key_case() {
        check(&Vector {
            name: "get-vanilla-query-order-key-case",
            method: "GET",
            path: "/",
            query: &[("Param2", "value2"), ("Param1", "value1")],
            headers: &[("Host", "example.amazonaws.com")],
            payload: b"",
            token: None,
            creq: creq(
                "GET",
                "/",
                "Param1=value1&Param2=value2",
                &["host:example.amazonaws.com", "x-amz-date:20150830T123600Z"],
                EMPTY_SHA,
            ),
            sts: "AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/service/aws4_request\n816cd5b414d056048ba4f7c5386d6e0533120fb1fcfa93762cf0fc39e2cf19e0",
            signature: "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500",
        });
    }

    #[test]
    fn post_x_www_form_urlencoded() {
        // The original suite's version: the body is hashed but no x-amz-content-sha256 header.
        check(&Vector {
            name: "post-x-www-form-urlencoded",
            method: "POST",
            path: "/",
            query: &[],
            headers: &[
                ("Content-Type", "application/x-www-form-urlencoded"),
                ("Host", "example.amazonaws.com"),
            ],
            payload: b"Param1=value1",
            token: None,
            creq: creq(
                "POST",
                "/",
                "",
                &[
                    "content-type:application/x-www-form-urlencoded",
                    "host:example.amazonaws.com",
                    "x-amz-date:20150830T123600Z",
                ],
                "9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e",
            ),
            sts: "AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/service/aws4_request\n42a5e5bb34198acb3e84da4f085bb7927f2bc277ca766e6d19c73c2154021281",
            signature: "ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a",
        });
    }

    #[test]
    fn post_x_www_form_urlencoded_signed_body() {
        // aws-c-auth's version: Content-Length and x-amz-content-sha256 signed too.
        check(&Vector {
            name: "post-x-www-form-urlencoded (signed body)",
            method: "POST",
            path: "/",
            query: &[],
            headers: &[
                ("Content-Type", "application/x-www-form-urlencoded"),
                ("Host", "example.amazonaws.com"),
                ("Content-Length", "13"),
                (
                    "x-amz-content-sha256",
                    "9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e",
                ),
            ],
            payload: b"Param1=value1",
            token: None,
            creq: creq(
                "POST",
                "/",
                "",
                &[
                    "content-length:13",
                    "content-type:application/x-www-form-urlencoded",
                    "host:example.amazonaws.com",
                    "x-amz-content-sha256:9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e",
                    "x-amz-date:20150830T123600Z",
                ],
                "9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e",
            ),
            sts: "AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/service/aws4_request\nb1edd1d03544c25390e32085d55b57acc9a3961bb59415ff86c45c3d89d16cfb",
            signature: "d3875051da38690788ef43de4db0d8f280229d82040bfac253562e56c3f20e0b",
        });
    }

    #[test]
    fn get_header_value_trim() {
        check(&Vector {
            name: "get-header-value-trim",
            method: "GET",
            path: "/",
            query: &[],
            headers: &[
                ("Host", "example.amazonaws.com"),
                ("My-Header1", " value1"),
                ("My-Header2", " \"a   b   c\""),
            ],
            payload: b"",
            token: None,
            creq: creq(
                "GET",
                "/",
                "",
                &[
                    "host:example.amazonaws.com",
                    "my-header1:value1",
                    "my-header2:\"a b c\"",
                    "x-amz-date:20150830T123600Z",
                ],
                EMPTY_SHA,
            ),
            sts: "AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/service/aws4_request\na726db9b0df21c14f559d0a978e563112acb1b9e05476f0a6a1c7d68f28605c7",
            signature: "acc3ed3afb60bb290fc8d2dd0098b9911fcaa05412b367055dee359757a9c736",
        });
    }

    #[test]
    fn get_header_key_duplicate() {
        check(&Vector {
            name: "get-header-key-duplicate",
            method: "GET",
            path: "/",
            query: &[],
            headers: &[
                ("Host", "example.amazonaws.com"),
                ("My-Header1", "value2"),
                ("My-Header1", "value2"),
                ("My-Header1", "value1"),
            ],
            payload: b"",
            token: None,
            creq: creq(
                "GET",
                "/",
                "",
                &[
                    "host:example.amazonaws.com",
                    "my-header1:value2,value2,value1",
                    "x-amz-date:20150830T123600Z",
                ],
                EMPTY_SHA,
            ),
            sts: "AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/service/aws4_request\ndc7f04a3abfde8d472b0ab1a418b741b7c67174dad1551b4117b15527fbe966c",
            signature: "c9d5ea9f3f72853aea855b47ea873832890dbdd183b4468f858259531a5138ea",
        });
    }

    #[test]
    fn post_header_value_case() {
        // Values keep their case; names are lower-cased.
        let creds = Credentials::new(AKID, SECRET, None);
        let out = sign(
            &SignableRequest {
                method: "POST",
                path: "/",
                query: &[],
                headers: &[("Host", "example.amazonaws.com"), ("My-Header1", "VALUE1")],
                payload: b"",
            },
            &creds,
            &params(),
        )
        .unwrap();
        assert!(out.authorization.ends_with(
            "SignedHeaders=host;my-header1;x-amz-date, Signature=cdbc9802e29d2942e5e10b5bccfdd67c5f22c7c4e8ae67b53629efa58b974b7d"
        ));
    }

    #[test]
    fn get_vanilla_with_session_token() {
        let token = "6e86291e8372ff2a2260956d9b8aae1d763fbf315fa00fa31553b73ebf194267";
        check(&Vector {
            name: "get-vanilla-with-session-token",
            method: "GET",
            path: "/",
            query: &[],
            headers: &[("Host", "example.amazonaws.com")],
            payload: b"",
            token: Some(token),
            creq: creq(
                "GET",
                "/",
                "",
                &[
                    "host:example.amazonaws.com",
                    "x-amz-date:20150830T123600Z",
                    &format!("x-amz-security-token:{token}"),
                ],
                EMPTY_SHA,
            ),
            sts: "AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/service/aws4_request\n067b36aa60031588cea4a4cde1f21215227a047690c72247f1d70b32fbbfad2b",
            signature: "07ec1639c89043aa0e3e2de82b96708f198cceab042d4a97044c66dd9f74e7f8",
        });
    }

    #[test]
    fn post_sts_header_before() {
        let token = "AQoDYXdzEPT//////////wEXAMPLEtc764bNrC9SAPBSM22wDOk4x4HIZ8j4FZTwdQWLWsKWHGBuFqwAeMicRXmxfpSPfIeoIYRqTflfKD8YUuwthAx7mSEI/qkPpKPi/kMcGdQrmGdeehM4IC1NtBmUpp2wUE8phUZampKsburEDy0KPkyQDYwT7WZ0wq5VSXDvp75YU9HFvlRd8Tx6q6fE8YQcHNVXAkiY9q6d+xo0rKwT38xVqr7ZD0u0iPPkUL64lIZbqBAz+scqKmlzm8FDrypNC9Yjc8fPOLn9FX9KSYvKTr4rvx3iSIlTJabIQwj2ICCR/oLxBA==";
        check(&Vector {
            name: "post-sts-header-before",
            method: "POST",
            path: "/",
            query: &[],
            headers: &[("Host", "example.amazonaws.com")],
            payload: b"",
            token: Some(token),
            creq: creq(
                "POST",
                "/",
                "",
                &[
                    "host:example.amazonaws.com",
                    "x-amz-date:20150830T123600Z",
                    &format!("x-amz-security-token:{token}"),
                ],
                EMPTY_SHA,
            ),
            sts: "AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/service/aws4_request\nc237e1b440d4c63c32ca95b5b99481081cb7b13c7e40434868e71567c1a882f6",
            signature: "85d96828115b5dc0cfc3bd16ad9e210dd772bbebba041836c64533a82be05ead",
        });
    }

    #[test]
    fn paths_and_queries_are_encoded() {
        // get-unreserved, get-utf8, get-space (unnormalized), get-vanilla-utf8-query,
        // get-vanilla-query-unreserved: only the signature is compared.
        let unreserved = "-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
        let unreserved_path = format!("/{unreserved}");
        type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
        let cases: &[Case] = &[
            (
                &unreserved_path,
                &[],
                "07ef7494c76fa4850883e2b006601f940f8a34d404d0cfa977f52a65bbf5f24f",
            ),
            (
                "/\u{1234}",
                &[],
                "8318018e0b0f223aa2bbf98705b62bb787dc9c0e678f255a891fd03141be5d85",
            ),
            (
                "/example space/",
                &[],
                "652487583200325589f1fba4c7e578f72c47cb61beeca81406b39ddec1366741",
            ),
            (
                "/",
                &[("\u{1234}", "bar")],
                "2cdec8eed098649ff3a119c94853b13c643bcf08f8b0a1d91e12c9027818dd04",
            ),
            (
                "/",
                &[(unreserved, unreserved)],
                "9c3e54bfcdf0b19771a7f523ee5669cdf59bc7cc0884027167c21bb143a40197",
            ),
        ];
        let creds = Credentials::new(AKID, SECRET, None);
        for (path, query, sig) in cases {
            let out = sign(
                &SignableRequest {
                    method: "GET",
                    path,
                    query,
                    headers: &[("Host", "example.amazonaws.com")],
                    payload: b"",
                },
                &creds,
                &params(),
            )
            .unwrap();
            assert!(
                out.authorization.ends_with(&format!("Signature={sig}")),
                "{path} {query:?}: {}",
                out.authorization
            );
        }
        // `.` and `..` resolved, empty segments dropped, before signing.
        let sig = |path| {
            let req = SignableRequest {
                method: "GET",
                path,
                query: &[],
                headers: &[("Host", "example.amazonaws.com")],
                payload: b"",
            };
            sign(&req, &creds, &params()).unwrap().authorization
        };
        assert_eq!(sig("/a/./b/../c//d/"), sig("/a/c/d/"));
        assert_eq!(sig(""), sig("/"));
    }

    #[test]
    fn debug_hides_the_token() {
        let creds = Credentials::new(AKID, SECRET, Some("the-session-token".into()));
        let out = sign(
            &SignableRequest {
                method: "POST",
                path: "/",
                query: &[],
                headers: &[("host", "x")],
                payload: b"",
            },
            &creds,
            &params(),
        )
        .unwrap();
        let dbg = format!("{out:?}");
        assert!(!dbg.contains("the-session-token"), "{dbg}");
        assert!(!dbg.contains(SECRET), "{dbg}");
    }
}
