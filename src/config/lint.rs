//! Warnings for valid files that probably do not do what their author meant. They never
//! reject a file (a reload with warnings applies); `tollgate check` prints them, `serve`
//! logs them, and `tollgate check --deny-warnings` turns them into a failure for CI.
//!
//! 1. **Shadowed methods**: routing takes the longest matching path prefix and never falls
//!    back to a shorter one, so a route at `/api` accepting PATCH never sees
//!    `PATCH /api/orders/7` when the routes at `/api/orders` do not take PATCH: the client
//!    gets 405.
//! 2. **Public under protected**: an `auth: none` route at or below the path of a route that
//!    requires a token is usually an accident of copy and paste (or a hole).
//! 3. **Scopes nobody grants**: when every issuer a route accepts declares the scopes it
//!    can grant (`issuers[].scopes`), a route requiring a scope none of them grants answers
//!    403 to every token.

use std::collections::{BTreeSet, HashMap};

use http::Method;

use super::Diagnostics;
use crate::auth::scopes::ScopeRequirement;
use crate::routes::{path_covers, AuthMode, Route};

/// Runs every check over the routes in file order (`routes[i]` is the file's i-th route:
/// lint only runs on files without errors). `declared` maps issuer ids to the scopes they
/// declare, for issuers that declare any.
pub(super) fn lint(
    routes: &[Route],
    all_issuers: &[String],
    declared: &HashMap<String, Vec<String>>,
    diags: &mut Diagnostics,
) {
    shadowed_methods(routes, diags);
    public_under_protected(routes, diags);
    scopes_nobody_grants(routes, all_issuers, declared, diags);
}

fn strictly_below(inner: &str, outer: &str) -> bool {
    inner != outer && path_covers(outer, inner)
}

fn shadowed_methods(routes: &[Route], diags: &mut Diagnostics) {
    // Methods accepted at each path (None: all).
    let mut by_path: HashMap<&str, Option<BTreeSet<&str>>> = HashMap::new();
    for r in routes {
        let entry = by_path
            .entry(r.path.as_str())
            .or_insert_with(|| Some(BTreeSet::new()));
        match (&r.methods, entry.as_mut()) {
            (None, _) => *entry = None,
            (Some(list), Some(set)) => set.extend(list.iter().map(Method::as_str)),
            (Some(_), None) => {}
        }
    }
    // A request below `deeper` that the routes at `deeper` refuse would otherwise have gone to
    // the routes at its nearest ancestor path: compare with those only.
    let nearest_ancestor = |deeper: &str| -> Option<&str> {
        by_path
            .keys()
            .copied()
            .filter(|p| strictly_below(deeper, p))
            .max_by_key(|p| p.len())
    };
    for (i, outer) in routes.iter().enumerate() {
        let mut deeper: Vec<&str> = by_path
            .keys()
            .copied()
            .filter(|p| nearest_ancestor(p) == Some(outer.path.as_str()))
            .collect();
        deeper.sort_unstable();
        for path in deeper {
            let Some(Some(taken)) = by_path.get(path) else {
                continue; // the deeper path takes every method
            };
            let what = match &outer.methods {
                Some(list) => list
                    .iter()
                    .map(Method::as_str)
                    .filter(|m| !taken.contains(m))
                    .collect::<Vec<_>>()
                    .join(", "),
                None => format!(
                    "any method except {}",
                    taken.iter().copied().collect::<Vec<_>>().join(", ")
                ),
            };
            if what.is_empty() {
                continue;
            }
            diags.warning(
                format!("routes[{i}].path"),
                format!(
                    "route `{}` never receives {what} below `{path}`: the routes at `{path}` \
                     own that subtree and answer 405 (there is no fallback to shorter paths)",
                    outer.id
                ),
            );
        }
    }
}

fn public_under_protected(routes: &[Route], diags: &mut Diagnostics) {
    for (i, public) in routes.iter().enumerate() {
        if public.auth != AuthMode::None {
            continue;
        }
        let guard = routes
            .iter()
            .filter(|r| r.auth == AuthMode::Required && path_covers(&r.path, &public.path))
            .max_by_key(|r| r.path.len());
        if let Some(guard) = guard {
            diags.warning(
                format!("routes[{i}].auth"),
                format!(
                    "route `{}` is public (`auth: none`) at `{}`, under `{}` where route `{}` \
                     requires a token; check that this is meant",
                    public.id, public.path, guard.path, guard.id
                ),
            );
        }
    }
}

fn scopes_nobody_grants(
    routes: &[Route],
    all_issuers: &[String],
    declared: &HashMap<String, Vec<String>>,
    diags: &mut Diagnostics,
) {
    for (i, route) in routes.iter().enumerate() {
        if route.auth == AuthMode::None {
            continue;
        }
        let accepted = route.issuers.as_deref().unwrap_or(all_issuers);
        // An issuer that declares nothing might grant anything: no verdict.
        let Some(grants) = accepted
            .iter()
            .map(|id| declared.get(id))
            .collect::<Option<Vec<_>>>()
        else {
            continue;
        };
        let can = |scope: &String| grants.iter().any(|g| g.contains(scope));
        let missing: Vec<&str> = match &route.scopes {
            ScopeRequirement::None => continue,
            // Each scope must come from one issuer that grants them all.
            ScopeRequirement::AllOf(req) => {
                if grants.iter().any(|g| req.iter().all(|s| g.contains(s))) {
                    continue;
                }
                req.iter().filter(|s| !can(s)).map(String::as_str).collect()
            }
            ScopeRequirement::AnyOf(opts) => {
                if opts.iter().any(can) {
                    continue;
                }
                opts.iter().map(String::as_str).collect()
            }
        };
        let detail = if missing.is_empty() {
            "no single accepted issuer grants all of them".to_string()
        } else {
            format!("no accepted issuer declares {}", missing.join(", "))
        };
        diags.warning(
            format!("routes[{i}].scopes"),
            format!(
                "route `{}` can never be satisfied: {detail} (issuers: {}); every token gets 403",
                route.id,
                accepted.join(", ")
            ),
        );
    }
}
