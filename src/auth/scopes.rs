//! Scope requirements of a route and the scopes a token grants.
//!
//! Granted scopes come from `scope` (a space-delimited string: RFC 6749 §3.3, RFC 8693 §4.2,
//! RFC 9068 §2.2.3) and from `scp` (an array, as Okta sends it, or a space-delimited string,
//! as Entra ID sends it). Matching is exact per scope token: `admin` never satisfies
//! `superadmin`, and `orders` never satisfies `orders:read`.

use super::claims::Claims;

/// What a route requires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScopeRequirement {
    /// Nothing beyond a valid token.
    None,
    /// Every listed scope.
    AllOf(Vec<String>),
    /// At least one of the listed scopes.
    AnyOf(Vec<String>),
}

impl ScopeRequirement {
    /// Whether the token's claims grant what this requirement asks.
    pub fn is_satisfied_by(&self, claims: &Claims) -> bool {
        match self {
            ScopeRequirement::None => true,
            ScopeRequirement::AllOf(required) => required.iter().all(|s| grants(claims, s)),
            ScopeRequirement::AnyOf(options) => options.iter().any(|s| grants(claims, s)),
        }
    }

    /// The `scope` attribute of a 403 challenge (RFC 6750 §3): the required scopes, or for
    /// `any_of` the options, space-delimited.
    pub fn challenge(&self) -> String {
        match self {
            ScopeRequirement::None => String::new(),
            ScopeRequirement::AllOf(s) | ScopeRequirement::AnyOf(s) => s.join(" "),
        }
    }
}

/// Whether `scope` is one of the scope tokens in the claims.
fn grants(claims: &Claims, scope: &str) -> bool {
    let in_string = |s: &str| s.split(' ').any(|granted| granted == scope);
    if claims.str("scope").is_some_and(in_string) {
        return true;
    }
    let Some(scp) = claims.get("scp") else {
        return false;
    };
    match scp.as_str() {
        Some(s) => in_string(s),
        None => scp
            .as_str_array()
            .is_some_and(|items| items.iter().any(|i| i == scope)),
    }
}

/// Whether a scope name is a valid scope-token (RFC 6749 §3.3: %x21 / %x23-5B / %x5D-7E).
pub fn is_valid_scope_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(v: serde_json::Value) -> Claims {
        Claims::from_value(&v).unwrap()
    }

    #[test]
    fn exact_token_match_only() {
        let c = claims(json!({"scope": "admin orders:read"}));
        assert!(!ScopeRequirement::AllOf(vec!["superadmin".into()]).is_satisfied_by(&c));
        assert!(!ScopeRequirement::AllOf(vec!["orders".into()]).is_satisfied_by(&c));
        assert!(
            ScopeRequirement::AllOf(vec!["admin".into(), "orders:read".into()]).is_satisfied_by(&c)
        );
    }

    #[test]
    fn scp_array_and_string_and_any_of() {
        let arr = claims(json!({"scp": ["a", "b"]}));
        let s = claims(json!({"scp": "a b"}));
        let any = ScopeRequirement::AnyOf(vec!["x".into(), "b".into()]);
        assert!(any.is_satisfied_by(&arr));
        assert!(any.is_satisfied_by(&s));
        assert!(!ScopeRequirement::AllOf(vec!["a".into(), "x".into()]).is_satisfied_by(&arr));
        assert_eq!(any.challenge(), "x b");
    }
}
