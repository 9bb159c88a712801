//! ES256 and ES384 signatures (RFC 7518 §3.4) checked with aws-lc's `ECDSA_do_verify`.
//!
//! Why not aws-lc-rs, which every other algorithm goes through: its ECDSA verification
//! turns the JWS signature (fixed-length `r || s`) into DER, then hands it to
//! `EVP_DigestVerify`, which parses the DER back into two numbers. That is about a dozen
//! allocations and a context set up per token. Measured in a loop on this project's
//! benchmark machine: 49.2 µs per ES256 verification through aws-lc-rs, 48.0 µs here (issue
//! 5, where ES256 without the cache sits at the edge of its target). The arithmetic is
//! aws-lc's own; this module only skips the conversions. The key is checked once, at load
//! (on the curve, not the point at infinity), and each thread keeps the two numbers of a
//! signature in place, so a verification allocates nothing.
#![allow(unsafe_code)]

use std::ptr::NonNull;

use aws_lc_rs::digest;
use aws_lc_sys as ffi;

/// The curves JWS names for ECDSA that tollgate accepts (ES512's P-521 is not among the
/// supported algorithms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Curve {
    /// ES256: P-256 with SHA-256.
    P256,
    /// ES384: P-384 with SHA-384.
    P384,
}

impl Curve {
    /// Bytes of one coordinate, and of each of `r` and `s` (RFC 7518 §3.4).
    pub fn scalar_len(self) -> usize {
        match self {
            Curve::P256 => 32,
            Curve::P384 => 48,
        }
    }

    fn nid(self) -> i32 {
        match self {
            Curve::P256 => ffi::NID_X9_62_prime256v1,
            Curve::P384 => ffi::NID_secp384r1,
        }
    }

    fn digest(self) -> &'static digest::Algorithm {
        match self {
            Curve::P256 => &digest::SHA256,
            Curve::P384 => &digest::SHA384,
        }
    }
}

/// A validated ECDSA public key.
pub struct EcdsaKey {
    key: NonNull<ffi::EC_KEY>,
    curve: Curve,
}

// SAFETY: after `new` the key is never mutated; it is only passed as `const EC_KEY *`, and
// aws-lc (like BoringSSL, whose API conventions it keeps) makes concurrent use of an object
// through const pointers thread-safe.
unsafe impl Send for EcdsaKey {}
// SAFETY: as for `Send`.
unsafe impl Sync for EcdsaKey {}

impl Drop for EcdsaKey {
    fn drop(&mut self) {
        // SAFETY: `key` came from EC_KEY_new_by_curve_name and is freed once, here.
        unsafe { ffi::EC_KEY_free(self.key.as_ptr()) }
    }
}

impl EcdsaKey {
    /// The key whose public point is `point`, an uncompressed SEC 1 point (`0x04 || x || y`,
    /// SEC 1 §2.3.3). `None` unless it lies on `curve` and is not the point at infinity.
    pub fn new(curve: Curve, point: &[u8]) -> Option<EcdsaKey> {
        if point.len() != 1 + 2 * curve.scalar_len() || point[0] != 0x04 {
            return None;
        }
        // SAFETY: each pointer is checked for null before use; `key` is owned by the
        // returned value (or freed by its Drop on the error paths), `pt` is freed here.
        unsafe {
            let key = EcdsaKey {
                key: NonNull::new(ffi::EC_KEY_new_by_curve_name(curve.nid()))?,
                curve,
            };
            let group = ffi::EC_KEY_get0_group(key.key.as_ptr());
            let pt = ffi::EC_POINT_new(group);
            if pt.is_null() {
                return None;
            }
            // oct2point refuses a point that is not on the curve.
            let ok = ffi::EC_POINT_oct2point(
                group,
                pt,
                point.as_ptr(),
                point.len(),
                std::ptr::null_mut(),
            ) == 1
                && ffi::EC_KEY_set_public_key(key.key.as_ptr(), pt) == 1
                && ffi::EC_KEY_check_key(key.key.as_ptr()) == 1;
            ffi::EC_POINT_free(pt);
            ffi::ERR_clear_error();
            ok.then_some(key)
        }
    }

    /// Whether `signature` (`r || s`, each `scalar_len` bytes) signs `message`.
    pub fn accepts(&self, message: &[u8], signature: &[u8]) -> bool {
        let n = self.curve.scalar_len();
        if signature.len() != 2 * n {
            return false;
        }
        let hash = digest::digest(self.curve.digest(), message);
        let (r, s) = signature.split_at(n);
        let check = |sig: &Signature| sig.verify(hash.as_ref(), r, s, self.key);
        // The thread's numbers when it has them: not during thread teardown, nor if their
        // first allocation failed; then numbers of its own for this call.
        match SCRATCH.try_with(|scratch| scratch.as_ref().map(check)) {
            Ok(Some(result)) => result,
            _ => Signature::new().is_some_and(|sig| check(&sig)),
        }
    }
}

thread_local! {
    static SCRATCH: Option<Signature> = Signature::new();
}

/// An `ECDSA_SIG` whose two numbers are overwritten by each verification: after the first,
/// they have room for any signature of the supported curves and nothing is allocated.
struct Signature {
    sig: NonNull<ffi::ECDSA_SIG>,
    /// `sig`'s numbers, owned by it.
    r: NonNull<ffi::BIGNUM>,
    s: NonNull<ffi::BIGNUM>,
}

impl Drop for Signature {
    fn drop(&mut self) {
        // SAFETY: owned since `new`, freed once, with the numbers it owns.
        unsafe { ffi::ECDSA_SIG_free(self.sig.as_ptr()) }
    }
}

impl Signature {
    fn new() -> Option<Signature> {
        // SAFETY: null checks before use; set0 takes ownership of both numbers on success,
        // and they are freed here otherwise (BN_free accepts null).
        unsafe {
            let sig = NonNull::new(ffi::ECDSA_SIG_new())?;
            let (r, s) = (ffi::BN_new(), ffi::BN_new());
            match (NonNull::new(r), NonNull::new(s)) {
                (Some(r), Some(s))
                    if ffi::ECDSA_SIG_set0(sig.as_ptr(), r.as_ptr(), s.as_ptr()) == 1 =>
                {
                    Some(Signature { sig, r, s })
                }
                _ => {
                    ffi::BN_free(r);
                    ffi::BN_free(s);
                    ffi::ECDSA_SIG_free(sig.as_ptr());
                    None
                }
            }
        }
    }

    fn verify(&self, hash: &[u8], r: &[u8], s: &[u8], key: NonNull<ffi::EC_KEY>) -> bool {
        // SAFETY: `self` owns the signature and its numbers, which BN_bin2bn overwrites in
        // place (growing them only if too small); the slices outlive the calls; `key` is a
        // live, validated key (see `EcdsaKey`). ECDSA_do_verify itself refuses r or s
        // outside [1, n-1].
        unsafe {
            let valid = !ffi::BN_bin2bn(r.as_ptr(), r.len(), self.r.as_ptr()).is_null()
                && !ffi::BN_bin2bn(s.as_ptr(), s.len(), self.s.as_ptr()).is_null()
                && ffi::ECDSA_do_verify(hash.as_ptr(), hash.len(), self.sig.as_ptr(), key.as_ptr())
                    == 1;
            if !valid {
                // A refused signature leaves an entry on aws-lc's per-thread error queue.
                ffi::ERR_clear_error();
            }
            valid
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::rand::{SecureRandom, SystemRandom};
    use aws_lc_rs::signature::{self as sig, EcdsaKeyPair, KeyPair, ParsedPublicKey};

    struct Pair {
        signer: EcdsaKeyPair,
        ours: EcdsaKey,
        theirs: ParsedPublicKey,
    }

    fn pair(curve: Curve) -> Pair {
        let (signing, verifying) = match curve {
            Curve::P256 => (
                &sig::ECDSA_P256_SHA256_FIXED_SIGNING,
                &sig::ECDSA_P256_SHA256_FIXED,
            ),
            Curve::P384 => (
                &sig::ECDSA_P384_SHA384_FIXED_SIGNING,
                &sig::ECDSA_P384_SHA384_FIXED,
            ),
        };
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(signing, &SystemRandom::new()).unwrap();
        let signer = EcdsaKeyPair::from_pkcs8(signing, pkcs8.as_ref()).unwrap();
        let point = signer.public_key().as_ref().to_vec();
        Pair {
            ours: EcdsaKey::new(curve, &point).unwrap(),
            theirs: ParsedPublicKey::new(verifying, &point).unwrap(),
            signer,
        }
    }

    /// Our verdict and aws-lc-rs's agree on genuine signatures, on signatures and messages
    /// with one bit flipped, and on out-of-range numbers; and a refusal leaves nothing on
    /// aws-lc's error queue.
    #[test]
    fn agrees_with_aws_lc_rs() {
        let rng = SystemRandom::new();
        for curve in [Curve::P256, Curve::P384] {
            let p = pair(curve);
            let n = curve.scalar_len();
            let (mut accepted, mut refused) = (0, 0);
            for i in 0..200usize {
                let mut message = vec![0u8; i % 97];
                rng.fill(&mut message).unwrap();
                let signature = p.signer.sign(&rng, &message).unwrap().as_ref().to_vec();
                let mut cases = vec![(message.clone(), signature.clone())];
                let mut flipped = signature.clone();
                flipped[i % (2 * n)] ^= 1 << (i % 8);
                cases.push((message.clone(), flipped));
                if !message.is_empty() {
                    let mut other = message.clone();
                    other[i % message.len()] ^= 0x80;
                    cases.push((other, signature.clone()));
                }
                let (r, s) = signature.split_at(n);
                for (a, b) in [(vec![0; n], s.to_vec()), (r.to_vec(), vec![0; n])] {
                    cases.push((message.clone(), [a, b].concat()));
                }
                cases.push((message.clone(), vec![0xff; 2 * n]));
                cases.push((message.clone(), signature[..2 * n - 1].to_vec()));
                cases.push((message.clone(), [signature.clone(), vec![0]].concat()));
                for (m, s) in cases {
                    // SAFETY: empties this thread's error queue (signing may leave entries).
                    unsafe { ffi::ERR_clear_error() };
                    let ours = p.ours.accepts(&m, &s);
                    // SAFETY: reads this thread's error queue. (aws-lc-rs, asked next,
                    // leaves its refusals there.)
                    assert_eq!(unsafe { ffi::ERR_get_error() }, 0);
                    assert_eq!(
                        ours,
                        p.theirs.verify_sig(&m, &s).is_ok(),
                        "{curve:?} case {i}"
                    );
                    // SAFETY: as above.
                    unsafe { ffi::ERR_clear_error() };
                    if ours {
                        accepted += 1;
                    } else {
                        refused += 1;
                    }
                }
            }
            assert_eq!(accepted, 200, "{curve:?}");
            assert!(refused >= 200 * 5, "{curve:?}: {refused}");
        }
    }

    #[test]
    fn points_off_the_curve_and_other_encodings_are_refused() {
        let p = pair(Curve::P256);
        let point = p.signer.public_key().as_ref().to_vec();
        let mut off = point.clone();
        off[64] ^= 1;
        assert!(EcdsaKey::new(Curve::P256, &off).is_none());
        let mut compressed = vec![0x02 | (point[64] & 1)];
        compressed.extend_from_slice(&point[1..33]);
        assert!(EcdsaKey::new(Curve::P256, &compressed).is_none());
        assert!(EcdsaKey::new(Curve::P256, &[0]).is_none());
        assert!(EcdsaKey::new(Curve::P256, &[0; 65]).is_none());
        // A P-256 point is not a P-384 key.
        assert!(EcdsaKey::new(Curve::P384, &point).is_none());
    }

    /// One key, four threads, each with its own scratch numbers.
    #[test]
    fn one_key_verifies_on_many_threads() {
        let p = pair(Curve::P256);
        let rng = SystemRandom::new();
        let signed: Vec<(Vec<u8>, Vec<u8>)> = (0..20u8)
            .map(|i| {
                let m = vec![i; 40];
                let s = p.signer.sign(&rng, &m).unwrap().as_ref().to_vec();
                (m, s)
            })
            .collect();
        std::thread::scope(|scope| {
            for t in 0..4 {
                let (key, signed) = (&p.ours, &signed);
                scope.spawn(move || {
                    for (i, (m, s)) in signed.iter().enumerate() {
                        assert!(key.accepts(m, s));
                        // Another token's signature for this message.
                        let other = &signed[(i + t + 1) % signed.len()].1;
                        assert!(!key.accepts(m, other));
                    }
                });
            }
        });
    }
}
