//! A token's claims set (RFC 7519 §4), read once and kept as its JSON text plus where each
//! top-level member lies in it.
//!
//! Why not a `serde_json::Map`: building one costs an allocation per name and per string
//! value and a tree of nodes, about 0.8 µs per token measured on loopback (issue 5), paid by
//! every token the cache does not know. The gateway reads a handful of members (`iss`,
//! `aud`, the time claims, `scope`/`scp`, the claims it forwards), each one string or number
//! in nearly every token, so those are answered from the text: a string without escapes is a
//! slice of it. Anything else (arrays, nested objects) is parsed from its own text when asked.
//!
//! The whole payload is still checked as JSON: an object, valid UTF-8, no trailing bytes, and
//! no claim name twice (RFC 7519 §4 lets a parser reject duplicates, and rejecting them means
//! the gateway and the upstream can never read two different values for one claim).

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::Value;

/// Above this many members, duplicates are found by sorting instead of pairwise comparison:
/// a payload of short names near the token size limit must not cost quadratic time before
/// its signature is even checked.
const PAIRWISE_DUPLICATE_CHECK_MAX: usize = 32;

/// A verified (or, inside `verify`, not yet verified) token's claims.
#[derive(Clone, Default, PartialEq)]
pub struct Claims {
    json: Box<str>,
    members: Box<[Member]>,
}

#[derive(Clone, PartialEq)]
struct Member {
    name: Text,
    /// The value's JSON text.
    raw: Span,
    /// For a string value, its content (decoded if it had escapes).
    string: Option<Text>,
}

#[derive(Clone, PartialEq)]
enum Text {
    /// Bytes of `json`, usable as they are.
    At(Span),
    /// Decoded from text with escapes (rare: claim names and values are nearly always plain).
    Decoded(Box<str>),
}

impl Text {
    /// Length in bytes, compared before the text itself in lookups.
    fn len(&self) -> u32 {
        match self {
            Text::At(span) => span.end - span.start,
            // Decoded from a span of the payload, so it fits in u32 too.
            Text::Decoded(s) => s.len() as u32,
        }
    }
}

#[derive(Clone, Copy, Default, PartialEq)]
struct Span {
    start: u32,
    end: u32,
}

/// Why a payload is not a claims set.
#[derive(Debug, PartialEq, Eq)]
pub enum ClaimsError {
    NotAnObject,
    DuplicateName,
}

/// One member's value.
#[derive(Clone, Copy)]
pub struct Claim<'c> {
    raw: &'c str,
    string: Option<&'c str>,
}

impl Claims {
    /// Reads a decoded JWT payload.
    pub fn parse(payload: &[u8]) -> Result<Claims, ClaimsError> {
        // Spans are u32: a payload is at most a token's 8 KiB, but this says so.
        if u32::try_from(payload.len()).is_err() {
            return Err(ClaimsError::NotAnObject);
        }
        let text = std::str::from_utf8(payload).map_err(|_| ClaimsError::NotAnObject)?;
        let json: Box<str> = text.into();
        let members = index(&json)?;
        Ok(Claims { json, members })
    }

    /// The claims of a JSON value (written out and read back: for tests and tools).
    pub fn from_value(value: &Value) -> Result<Claims, ClaimsError> {
        Claims::parse(value.to_string().as_bytes())
    }

    /// The value of the top-level member `name`.
    pub fn get(&self, name: &str) -> Option<Claim<'_>> {
        let len = u32::try_from(name.len()).ok()?;
        let m = self
            .members
            .iter()
            .find(|m| m.name.len() == len && self.text(&m.name) == name)?;
        Some(Claim {
            raw: self.at(m.raw),
            string: m.string.as_ref().map(|t| self.text(t)),
        })
    }

    /// The string value of `name`, if it is a string.
    pub fn str(&self, name: &str) -> Option<&str> {
        self.get(name)?.as_str()
    }

    /// Member names, in the order of the payload.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.members.iter().map(|m| self.text(&m.name))
    }

    fn text<'c>(&'c self, t: &'c Text) -> &'c str {
        match t {
            Text::At(span) => self.at(*span),
            Text::Decoded(s) => s,
        }
    }

    fn at(&self, span: Span) -> &str {
        // Spans are made by `index` from this same text, on char boundaries.
        self.json
            .get(span.start as usize..span.end as usize)
            .unwrap_or_default()
    }
}

impl fmt::Debug for Claims {
    // Claims are personal data (`sub`, `email`...): only their names are shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}

impl<'c> Claim<'c> {
    /// The content of a string value.
    pub fn as_str(&self) -> Option<&'c str> {
        self.string
    }

    /// A JSON number as `f64` (RFC 7519 §2 NumericDate may have a fraction); `None` for any
    /// other JSON type and for numbers out of `f64`'s finite range.
    pub fn as_f64(&self) -> Option<f64> {
        let first = *self.raw.as_bytes().first()?;
        if first != b'-' && !first.is_ascii_digit() {
            return None;
        }
        // The text passed serde_json's number syntax, which Rust's float syntax includes.
        self.raw.parse::<f64>().ok().filter(|f| f.is_finite())
    }

    /// An array of strings; `None` for any other value, or an array holding anything else.
    pub fn as_str_array(&self) -> Option<Vec<Cow<'c, str>>> {
        #[derive(serde::Deserialize)]
        struct Item<'a>(#[serde(borrow)] Cow<'a, str>);
        if !self.raw.starts_with('[') {
            return None;
        }
        let items: Vec<Item<'c>> = serde_json::from_str(self.raw).ok()?;
        Some(items.into_iter().map(|i| i.0).collect())
    }

    /// The value as a `serde_json::Value` (parsed on each call: for the rarer shapes). The
    /// text was checked when the claims were read; only a number beyond `f64`'s range, which
    /// `Value` cannot hold, reads as `null`.
    pub fn to_value(&self) -> Value {
        serde_json::from_str(self.raw).unwrap_or(Value::Null)
    }
}

/// The member list of `json`, which must be exactly one JSON object.
fn index(json: &str) -> Result<Box<[Member]>, ClaimsError> {
    let mut de = serde_json::Deserializer::from_str(json);
    let found = de
        .deserialize_map(MembersVisitor)
        .map_err(|_| ClaimsError::NotAnObject)?;
    de.end().map_err(|_| ClaimsError::NotAnObject)?;
    if has_duplicate(&found) {
        return Err(ClaimsError::DuplicateName);
    }
    let base = json.as_ptr() as usize;
    // Both slices borrow from `json`, so their offsets lie inside it.
    let span = |s: &str| {
        let start = s.as_ptr() as usize - base;
        Span {
            start: start as u32,
            end: (start + s.len()) as u32,
        }
    };
    let text = |c: &Cow<'_, str>| match c {
        Cow::Borrowed(s) => Text::At(span(s)),
        Cow::Owned(s) => Text::Decoded(s.as_str().into()),
    };
    let members: Box<[Member]> = found
        .iter()
        .map(|(name, raw)| {
            let raw = raw.get();
            Member {
                name: text(name),
                raw: span(raw),
                string: string_content(raw).map(|c| text(&c)),
            }
        })
        .collect();
    Ok(members)
}

fn has_duplicate(found: &Found<'_>) -> bool {
    if found.len() <= PAIRWISE_DUPLICATE_CHECK_MAX {
        return found
            .iter()
            .enumerate()
            .any(|(i, (a, _))| found[..i].iter().any(|(b, _)| a == b));
    }
    let mut names: Vec<&str> = found.iter().map(|(n, _)| n.as_ref()).collect();
    names.sort_unstable();
    names.windows(2).any(|w| w[0] == w[1])
}

/// The content of a JSON string value's text: a slice when it has no escapes.
fn string_content(raw: &str) -> Option<Cow<'_, str>> {
    let inner = raw.strip_prefix('"')?.strip_suffix('"')?;
    if !inner.contains('\\') {
        // serde_json checked the string: no control characters, so no decoding to do.
        return Some(Cow::Borrowed(inner));
    }
    serde_json::from_str::<String>(raw).ok().map(Cow::Owned)
}

/// A member name, borrowed from the text unless it had escapes.
struct Name<'de>(Cow<'de, str>);

impl<'de> de::Deserialize<'de> for Name<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Name<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a claim name")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Borrowed(s)))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Owned(s.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

type Found<'de> = Vec<(Cow<'de, str>, &'de RawValue)>;

struct MembersVisitor;

impl<'de> Visitor<'de> for MembersVisitor {
    type Value = Found<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Found<'de>, A::Error> {
        let mut found = Vec::with_capacity(map.size_hint().unwrap_or(12));
        while let Some((name, raw)) = map.next_entry::<Name<'de>, &'de RawValue>()? {
            found.push((name.0, raw));
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Claims, ClaimsError> {
        Claims::parse(s.as_bytes())
    }

    #[test]
    fn members_read_from_the_text() {
        let c =
            parse(r#" {"iss":"https://i","exp":17.5,"aud":["a","b\u0041"],"o":{"x":1},"n":null} "#)
                .unwrap();
        assert_eq!(c.str("iss"), Some("https://i"));
        assert_eq!(c.get("exp").unwrap().as_f64(), Some(17.5));
        assert_eq!(c.get("iss").unwrap().as_f64(), None);
        assert_eq!(c.get("exp").unwrap().as_str(), None);
        assert_eq!(
            c.get("aud").unwrap().as_str_array().unwrap(),
            vec!["a".to_string(), "bA".to_string()]
        );
        assert_eq!(c.get("o").unwrap().to_value(), serde_json::json!({"x": 1}));
        assert!(c.get("n").unwrap().to_value().is_null());
        assert!(c.get("missing").is_none());
        assert_eq!(
            c.names().collect::<Vec<_>>(),
            ["iss", "exp", "aud", "o", "n"]
        );
    }

    #[test]
    fn escapes_are_decoded_in_names_and_values() {
        let c = parse(r#"{"\u0069ss":"a\"b\\c","sub":"\u00e9t\u00e9"}"#).unwrap();
        assert_eq!(c.str("iss"), Some("a\"b\\c"));
        assert_eq!(c.str("sub"), Some("été"));
    }

    #[test]
    fn only_one_json_object_is_a_claims_set() {
        for bad in [
            "[]",
            "\"x\"",
            "{",
            "{}x",
            "{} {}",
            "{\"a\":1,}",
            "{\"a\":\"\u{1}\"}",
            "{\"a\":1e}",
        ] {
            assert_eq!(parse(bad), Err(ClaimsError::NotAnObject), "{bad}");
        }
        assert_eq!(
            Claims::parse(b"{\"a\":\"\xff\"}"),
            Err(ClaimsError::NotAnObject)
        );
        assert!(parse("{}").is_ok());
    }

    #[test]
    fn a_name_twice_is_refused_however_spelled_and_however_many_members() {
        assert_eq!(
            parse(r#"{"iss":"a","iss":"b"}"#),
            Err(ClaimsError::DuplicateName)
        );
        assert_eq!(
            parse(r#"{"iss":"a","\u0069ss":"b"}"#),
            Err(ClaimsError::DuplicateName)
        );
        let many: Vec<String> = (0..100).map(|i| format!("\"c{i}\":{i}")).collect();
        assert!(parse(&format!("{{{}}}", many.join(","))).is_ok());
        assert_eq!(
            parse(&format!("{{{},\"c7\":0}}", many.join(","))),
            Err(ClaimsError::DuplicateName)
        );
    }

    #[test]
    fn numbers_out_of_range_or_of_another_type_are_not_numbers() {
        let c = parse(r#"{"a":1e400,"b":"5","c":true,"d":-0.5e1}"#).unwrap();
        assert_eq!(c.get("a").unwrap().as_f64(), None);
        assert!(c.get("a").unwrap().to_value().is_null());
        assert_eq!(c.get("b").unwrap().as_f64(), None);
        assert_eq!(c.get("c").unwrap().as_f64(), None);
        assert_eq!(c.get("d").unwrap().as_f64(), Some(-5.0));
        assert_eq!(c.get("c").unwrap().as_str_array(), None);
        let mixed = parse(r#"{"aud":["a",1]}"#).unwrap();
        assert_eq!(mixed.get("aud").unwrap().as_str_array(), None);
    }

    /// The index against serde_json's own map, on generated payloads: every name, every value's
    /// string, number and JSON reading, with escapes spelled in several ways.
    #[test]
    fn agrees_with_serde_json_on_generated_payloads() {
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        const NAMES: [&str; 9] = ["iss", "sub", "aud", "exp", "scope", "é", "a\"b", "", "x y"];
        const NUMBERS: [&str; 8] = ["0", "-0", "17", "1.5", "-2e3", "1E+2", "1764400000.25", "3"];
        const CHARS: [char; 8] = ['a', 'Z', ' ', '"', '\\', '\n', 'é', '😀'];
        fn quote(text: &str, escape: bool) -> String {
            let mut out = String::from("\"");
            for c in text.chars() {
                match c {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    c if escape => {
                        let mut units = [0u16; 2];
                        for u in c.encode_utf16(&mut units) {
                            out.push_str(&format!("\\u{u:04x}"));
                        }
                    }
                    c => out.push(c),
                }
            }
            out.push('"');
            out
        }
        for _ in 0..2000 {
            let mut text = String::from("{");
            let mut names = Vec::new();
            for i in 0..next(7) {
                let name = NAMES[next(NAMES.len())];
                names.push(name);
                if i > 0 {
                    text.push_str(if next(2) == 0 { "," } else { " ,\n" });
                }
                text.push_str(&quote(name, next(3) == 0));
                text.push_str(if next(2) == 0 { ":" } else { " : " });
                match next(6) {
                    0 => {
                        let s: String = (0..next(6)).map(|_| CHARS[next(CHARS.len())]).collect();
                        text.push_str(&quote(&s, next(2) == 0));
                    }
                    1 => text.push_str(NUMBERS[next(NUMBERS.len())]),
                    2 => text.push_str(["true", "false", "null"][next(3)]),
                    3 => text.push_str(r#"["a", "b\u0063", 1]"#),
                    4 => text.push_str(r#"{"k": {"x": "y"}, "n": [1, 2.5]}"#),
                    _ => text.push_str(r#"["only", "strings"]"#),
                }
            }
            text.push('}');
            let mut unique = names.clone();
            unique.sort_unstable();
            unique.dedup();
            let parsed = parse(&text);
            if unique.len() < names.len() {
                assert_eq!(parsed, Err(ClaimsError::DuplicateName), "{text}");
                continue;
            }
            let claims = parsed.unwrap_or_else(|e| panic!("{text}: {e:?}"));
            let map: serde_json::Map<String, Value> = serde_json::from_str(&text).unwrap();
            assert_eq!(claims.names().count(), map.len(), "{text}");
            for (name, value) in &map {
                let claim = claims.get(name).unwrap_or_else(|| panic!("{text}: {name}"));
                assert_eq!(claim.as_str(), value.as_str(), "{text}: {name}");
                assert_eq!(claim.to_value(), *value, "{text}: {name}");
                match (claim.as_f64(), value.as_f64()) {
                    (Some(a), Some(b)) => assert!((a - b).abs() <= b.abs() * 1e-15, "{text}"),
                    (a, b) => assert_eq!(a, b, "{text}: {name}"),
                }
                let strings = value.as_array().and_then(|items| {
                    items
                        .iter()
                        .map(|i| i.as_str().map(str::to_owned))
                        .collect()
                });
                let ours: Option<Vec<String>> = claim
                    .as_str_array()
                    .map(|items| items.into_iter().map(Cow::into_owned).collect());
                assert_eq!(ours, strings, "{text}: {name}");
            }
        }
    }

    #[test]
    fn debug_shows_names_only() {
        let c = parse(r#"{"sub":"secret-person"}"#).unwrap();
        let shown = format!("{c:?}");
        assert!(shown.contains("sub") && !shown.contains("secret-person"));
    }
}
