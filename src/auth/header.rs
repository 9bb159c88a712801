//! The parts of a JWS compact serialization (RFC 7515 §7.1) before any key is involved: the
//! base64url decoding of a part, the protected header's parameters, and the checks that need
//! only the header (`alg`, `typ`).
//!
//! Both stay off the heap for ordinary tokens: a part decodes into a buffer on the caller's
//! stack when it fits, and the header is read into borrowed fields instead of a JSON map
//! (an allocation per name and value). This runs for every token the cache does not know,
//! before its signature is checked (issue 5).

use std::borrow::Cow;
use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::{DecodeSliceError, Engine};
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use jsonwebtoken::Algorithm;

use super::issuer::Issuer;
use super::jwks::parse_algorithm;
use super::rejection::{reject, Reason, TokenError};

/// Stack room for a decoded header or payload; larger parts (rare: the token limit is 8 KiB)
/// are decoded on the heap.
pub const PART_STACK_BYTES: usize = 2048;

/// A decoded signature fits here: 1024 bytes is RSA-8192, the largest key accepted.
pub const MAX_SIGNATURE_BYTES: usize = 1024;

/// Decodes one base64url part (no padding, RFC 7515 §2) into `stack` if it fits, else into
/// `heap`. `None` if the part is not base64url.
pub fn decode_part<'b>(part: &str, stack: &'b mut [u8], heap: &'b mut Vec<u8>) -> Option<&'b [u8]> {
    match URL_SAFE_NO_PAD.decode_slice(part, &mut *stack) {
        Ok(n) => stack.get(..n),
        Err(DecodeSliceError::OutputSliceTooSmall) => {
            URL_SAFE_NO_PAD.decode_vec(part, heap).ok()?;
            Some(heap.as_slice())
        }
        Err(DecodeSliceError::DecodeError(_)) => None,
    }
}

/// One header parameter, as the checks need it.
#[derive(Debug, Default, PartialEq, Eq)]
pub enum Param<'a> {
    #[default]
    Absent,
    Str(Cow<'a, str>),
    /// Present, with a JSON type other than string (`null` included).
    NotAString,
}

impl<'a> Param<'a> {
    pub fn is_present(&self) -> bool {
        *self != Param::Absent
    }
}

/// The protected header parameters the verifier reads (RFC 7515 §4.1, RFC 8725 §3.10).
/// Others are ignored. A parameter named twice makes the header unreadable (RFC 7515 §4
/// allows rejecting duplicates), as does any JSON value other than one object.
#[derive(Debug, Default, Deserialize)]
pub struct JwsHeader<'a> {
    #[serde(default, borrow)]
    pub alg: Param<'a>,
    #[serde(default, borrow)]
    pub kid: Param<'a>,
    #[serde(default, borrow)]
    pub typ: Param<'a>,
    #[serde(default, borrow)]
    pub crit: Param<'a>,
    #[serde(default, borrow)]
    pub jku: Param<'a>,
    #[serde(default, borrow)]
    pub x5u: Param<'a>,
    #[serde(default, borrow)]
    pub jwk: Param<'a>,
    #[serde(default, borrow)]
    pub x5c: Param<'a>,
}

impl<'a> JwsHeader<'a> {
    /// The rejection for a parameter that would make the verifier fetch or trust key material
    /// named by the token itself (RFC 8725 §3.10 and §2.7), if there is one: never followed,
    /// so its presence is enough.
    pub fn key_material_param(&self) -> Option<&'static str> {
        [
            (&self.jku, "the jku header parameter is not accepted"),
            (&self.x5u, "the x5u header parameter is not accepted"),
            (&self.jwk, "the jwk header parameter is not accepted"),
            (&self.x5c, "the x5c header parameter is not accepted"),
        ]
        .into_iter()
        .find_map(|(param, description)| param.is_present().then_some(description))
    }

    /// `None` unless `json` is exactly one JSON object with no parameter twice.
    pub fn parse(json: &'a [u8]) -> Option<JwsHeader<'a>> {
        // A derived struct also accepts a JSON array (fields by position): only objects here.
        let first = json.iter().find(|b| !b" \t\r\n".contains(b))?;
        if *first != b'{' {
            return None;
        }
        serde_json::from_slice(json).ok()
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Param<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ParamVisitor)
    }
}

struct ParamVisitor;

impl<'de> Visitor<'de> for ParamVisitor {
    type Value = Param<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Param<'de>, E> {
        Ok(Param::Str(Cow::Borrowed(s)))
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<Param<'de>, E> {
        Ok(Param::Str(Cow::Owned(s.to_owned())))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Param<'de>, E> {
        Ok(Param::NotAString)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Param<'de>, E> {
        Ok(Param::NotAString)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Param<'de>, E> {
        Ok(Param::NotAString)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Param<'de>, E> {
        Ok(Param::NotAString)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Param<'de>, E> {
        Ok(Param::NotAString)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Param<'de>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Param::NotAString)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Param<'de>, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Param::NotAString)
    }
}

pub fn header_alg(alg: &Param<'_>) -> Result<Algorithm, TokenError> {
    let Param::Str(alg) = alg else {
        return Err(reject(Reason::Malformed, "token header has no alg"));
    };
    if alg.eq_ignore_ascii_case("none") {
        return Err(reject(
            Reason::UnsupportedAlg,
            "unsigned tokens (alg none) are not accepted",
        ));
    }
    if alg.starts_with("HS") {
        return Err(reject(
            Reason::UnsupportedAlg,
            "symmetric algorithms are not accepted",
        ));
    }
    parse_algorithm(alg).ok_or(reject(
        Reason::UnsupportedAlg,
        "token algorithm is not supported",
    ))
}

/// RFC 9068 §2.1 / §4: `typ` must be `at+jwt` (the `application/` prefix may be omitted and
/// media types compare case-insensitively, RFC 7515 §4.1.9).
pub fn check_typ(typ: &Param<'_>, issuer: &Issuer) -> Result<(), TokenError> {
    let Some(required) = &issuer.require_typ else {
        return Ok(());
    };
    let ok = match typ {
        Param::Str(typ) => typ_is(typ, required),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(reject(
            Reason::WrongTyp,
            "token typ is not the required type",
        ))
    }
}

/// Whether `typ` names the media type `required` (normalized by [`normalize_typ`]), without
/// allocating: this runs for every token the cache does not know.
fn typ_is(typ: &str, required: &str) -> bool {
    const PREFIX: &str = "application/";
    let bare = match typ.get(..PREFIX.len()) {
        Some(head) if head.eq_ignore_ascii_case(PREFIX) => &typ[PREFIX.len()..],
        _ => typ,
    };
    bare.eq_ignore_ascii_case(required)
}

/// `application/at+JWT` → `at+jwt`.
pub fn normalize_typ(typ: &str) -> String {
    let lower = typ.to_ascii_lowercase();
    match lower.strip_prefix("application/") {
        Some(rest) => rest.to_string(),
        None => lower,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(json: &str) -> Option<JwsHeader<'_>> {
        JwsHeader::parse(json.as_bytes())
    }

    #[test]
    fn parameters_by_type() {
        let p = h(r#" {"alg":"RS256","kid":7,"typ":"at\u002bjwt","crit":null,"x":[1,{"y":2}]}"#)
            .unwrap();
        assert_eq!(p.alg, Param::Str(Cow::Borrowed("RS256")));
        assert_eq!(p.kid, Param::NotAString);
        assert_eq!(p.typ, Param::Str(Cow::Owned("at+jwt".into())));
        assert!(p.crit.is_present(), "crit: null is present");
        assert!(!p.jku.is_present());
        let p = h(r#"{"alg":"ES256","jwk":{"kty":"EC"},"x5c":["a"]}"#).unwrap();
        assert!(p.jwk.is_present() && p.x5c.is_present() && !p.x5u.is_present());
    }

    #[test]
    fn only_one_object_without_duplicates() {
        for bad in [
            r#"["RS256"]"#,
            r#""RS256""#,
            r#"{"alg":"RS256","alg":"none"}"#,
            r#"{"alg":"RS256"} x"#,
            r#"{"alg":"RS256""#,
            "",
            "  ",
        ] {
            assert!(h(bad).is_none(), "{bad}");
        }
        assert_eq!(h("{}").unwrap().alg, Param::Absent);
    }

    #[test]
    fn typ_compares_like_its_normalized_form() {
        assert_eq!(normalize_typ("application/AT+JWT"), "at+jwt");
        for (typ, same) in [
            ("at+jwt", true),
            ("AT+JWT", true),
            ("application/at+jwt", true),
            ("Application/At+Jwt", true),
            ("application/", false),
            ("jwt", false),
            ("application/application/at+jwt", false),
            ("xapplication/at+jwt", false),
            ("applicatio\u{e9}/at+jwt", false),
        ] {
            assert_eq!(typ_is(typ, "at+jwt"), same, "{typ}");
            assert_eq!(normalize_typ(typ) == "at+jwt", same, "{typ}");
        }
    }

    #[test]
    fn parts_decode_on_the_stack_or_the_heap() {
        let text = "x".repeat(3000);
        let part = URL_SAFE_NO_PAD.encode(&text);
        let (mut stack, mut heap) = ([0u8; 16], Vec::new());
        assert_eq!(
            decode_part(&part, &mut stack, &mut heap),
            Some(text.as_bytes())
        );
        let mut big = [0u8; 4096];
        assert_eq!(
            decode_part(&part, &mut big, &mut Vec::new()),
            Some(text.as_bytes())
        );
        assert_eq!(decode_part("a+b", &mut big, &mut Vec::new()), None);
        assert_eq!(decode_part("YQ==", &mut big, &mut Vec::new()), None);
    }
}
