//! XEdDSA over Curve25519 as Signal uses it: a Montgomery (X25519) identity key signs with an
//! Ed25519-style signature whose sign bit travels in the top bit of the last signature byte.

use curve25519_dalek::constants::ED25519_BASEPOINT_TABLE;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::montgomery::MontgomeryPoint;
use curve25519_dalek::scalar::Scalar;
use sha2::{Digest, Sha512};
use subtle::ConstantTimeEq;

/// A serialized EC public key as Signal writes it: the type byte `EC_KEY_PREFIX`, then the
/// Montgomery u-coordinate (32 bytes, little-endian).
pub const EC_KEY_LEN: usize = 33;
pub const EC_KEY_PREFIX: u8 = 0x05;
/// An XEdDSA signature: R (32 bytes) and s (32 bytes), the sign bit in the top bit of the last.
pub const SIGNATURE_LEN: usize = 64;

/// Why a u-coordinate is refused as a public key. Honest keys (a clamped scalar times the base
/// point, as libsignal makes them) never hit any of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PointFault {
    /// Bit 255 set: X25519 ignores it, so two encodings would name one key.
    TopBitSet,
    /// u ≥ p: a second encoding of a field element.
    NonCanonical,
    /// A point of order 1, 2, 4 or 8 (all-zero included): signatures "by" it can be made
    /// without a private key, and DH with it yields a predictable secret.
    SmallOrder,
    /// On the quadratic twist, not on Curve25519: no private key gives it.
    NotOnCurve,
}

impl PointFault {
    pub fn reason(self) -> &'static str {
        match self {
            Self::TopBitSet => "the top bit of the last byte is set",
            Self::NonCanonical => "the u-coordinate is not reduced modulo 2^255-19",
            Self::SmallOrder => "a low-order point (such as all zeros)",
            Self::NotOnCurve => "not a point on Curve25519",
        }
    }
}

/// p = 2^255 - 19, little-endian.
const P: [u8; 32] = {
    let mut p = [0xFF; 32];
    p[0] = 0xED;
    p[31] = 0x7F;
    p
};

/// The canonical u-coordinates of Curve25519's small-order points (the list libsodium and
/// Bernstein's "Curve25519" notes give): 0, 1, the two of order 8, and p - 1. Their
/// non-canonical twins (p, p + 1, top bit set) are refused as non-canonical.
const SMALL_ORDER_U: [[u8; 32]; 5] = [
    [0; 32],
    {
        let mut one = [0; 32];
        one[0] = 1;
        one
    },
    [
        0xe0, 0xeb, 0x7a, 0x7c, 0x3b, 0x41, 0xb8, 0xae, 0x16, 0x56, 0xe3, 0xfa, 0xf1, 0x9f, 0xc4,
        0x6a, 0xda, 0x09, 0x8d, 0xeb, 0x9c, 0x32, 0xb1, 0xfd, 0x86, 0x62, 0x05, 0x16, 0x5f, 0x49,
        0xb8, 0x00,
    ],
    [
        0x5f, 0x9c, 0x95, 0xbc, 0xa3, 0x50, 0x8c, 0x24, 0xb1, 0xd0, 0xb1, 0x55, 0x9c, 0x83, 0xef,
        0x5b, 0x04, 0x44, 0x5c, 0xc4, 0x58, 0x1c, 0x8e, 0x86, 0xd8, 0x22, 0x4e, 0xdd, 0xd0, 0x9f,
        0x11, 0x57,
    ],
    {
        let mut p_minus_one = P;
        p_minus_one[0] = 0xEC;
        p_minus_one
    },
];

/// Checks a public key's u-coordinate (the 32 bytes after the 0x05 prefix).
pub fn check_point(u: &[u8; 32]) -> Result<(), PointFault> {
    if u[31] & 0x80 != 0 {
        return Err(PointFault::TopBitSet);
    }
    // Little-endian: compare from the most significant byte down.
    if u.iter().rev().cmp(P.iter().rev()) != std::cmp::Ordering::Less {
        return Err(PointFault::NonCanonical);
    }
    if SMALL_ORDER_U.contains(u) {
        return Err(PointFault::SmallOrder);
    }
    // The list above is the known set; the torsion check guards against a gap in it.
    match MontgomeryPoint(*u).to_edwards(0) {
        None => Err(PointFault::NotOnCurve),
        Some(p) if p.is_small_order() => Err(PointFault::SmallOrder),
        Some(_) => Ok(()),
    }
}

/// Verifies `signature` by the serialized identity key (0x05 ‖ u) over `message`.
pub fn verify(identity_key: &[u8], message: &[u8], signature: &[u8]) -> bool {
    if identity_key.len() != EC_KEY_LEN
        || identity_key[0] != EC_KEY_PREFIX
        || signature.len() != SIGNATURE_LEN
    {
        return false;
    }
    let mut u = [0u8; 32];
    u.copy_from_slice(&identity_key[1..]);
    if check_point(&u).is_err() {
        return false;
    }
    let sign_bit = (signature[63] & 0x80) >> 7;
    let Some(ed_public) = MontgomeryPoint(u).to_edwards(sign_bit) else {
        return false;
    };
    let cap_a = ed_public.compress();
    let mut cap_r = [0u8; 32];
    cap_r.copy_from_slice(&signature[..32]);
    let mut s = [0u8; 32];
    s.copy_from_slice(&signature[32..]);
    s[31] &= 0x7F;
    // Reject non-canonical s (the high bits must be clear once the sign bit is removed).
    if s[31] & 0xE0 != 0 {
        return false;
    }
    let Some(s) = Option::<Scalar>::from(Scalar::from_canonical_bytes(s)) else {
        return false;
    };
    let Some(a) = cap_a.decompress() else {
        return false;
    };
    if a.is_small_order() {
        return false;
    }
    let h = Scalar::from_hash(
        Sha512::new()
            .chain_update(cap_r)
            .chain_update(cap_a.as_bytes())
            .chain_update(message),
    );
    let r_check = EdwardsPoint::vartime_double_scalar_mul_basepoint(&h, &-a, &s).compress();
    bool::from(r_check.as_bytes().ct_eq(&cap_r))
}

/// An X25519 key pair able to make XEdDSA signatures; used by tests, benchmarks and tools that
/// play a client.
pub struct KeyPair {
    secret: [u8; 32],
}

impl KeyPair {
    pub fn generate(rng: &mut impl rand::RngCore) -> Self {
        let mut secret = [0u8; 32];
        rng.fill_bytes(&mut secret);
        secret[0] &= 248;
        secret[31] &= 127;
        secret[31] |= 64;
        Self { secret }
    }

    /// Serialized public key: 0x05 ‖ X25519(secret, 9).
    pub fn public_key(&self) -> Vec<u8> {
        let u = MontgomeryPoint::mul_base_clamped(self.secret);
        let mut out = Vec::with_capacity(EC_KEY_LEN);
        out.push(EC_KEY_PREFIX);
        out.extend_from_slice(u.as_bytes());
        out
    }

    pub fn sign(&self, message: &[u8], rng: &mut impl rand::RngCore) -> Vec<u8> {
        let a = Scalar::from_bytes_mod_order(self.secret);
        let ed_public = (&a * ED25519_BASEPOINT_TABLE).compress();
        let sign_bit = ed_public.as_bytes()[31] & 0x80;
        let mut noise = [0u8; 64];
        rng.fill_bytes(&mut noise);
        let mut prefix = [0xFFu8; 32];
        prefix[0] = 0xFE;
        let r = Scalar::from_hash(
            Sha512::new()
                .chain_update(prefix)
                .chain_update(self.secret)
                .chain_update(message)
                .chain_update(noise),
        );
        let cap_r: CompressedEdwardsY = (&r * ED25519_BASEPOINT_TABLE).compress();
        let h = Scalar::from_hash(
            Sha512::new()
                .chain_update(cap_r.as_bytes())
                .chain_update(ed_public.as_bytes())
                .chain_update(message),
        );
        let s = h * a + r;
        let mut sig = Vec::with_capacity(SIGNATURE_LEN);
        sig.extend_from_slice(cap_r.as_bytes());
        sig.extend_from_slice(s.as_bytes());
        sig[63] &= 0x7F;
        sig[63] |= sign_bit;
        sig
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_round_trip_and_any_flipped_bit_fails() {
        let mut rng = rand::thread_rng();
        for _ in 0..20 {
            let kp = KeyPair::generate(&mut rng);
            let msg = KeyPair::generate(&mut rng).public_key();
            let sig = kp.sign(&msg, &mut rng);
            assert!(verify(&kp.public_key(), &msg, &sig));
            for bit in [0usize, 100, 255, 256 + 7, 511] {
                let mut bad = sig.clone();
                bad[bit / 8] ^= 1 << (bit % 8);
                assert!(
                    !verify(&kp.public_key(), &msg, &bad),
                    "bit {bit} flipped still verifies"
                );
            }
            let mut other = msg.clone();
            other[5] ^= 1;
            assert!(!verify(&kp.public_key(), &other, &sig));
            let stranger = KeyPair::generate(&mut rng);
            assert!(!verify(&stranger.public_key(), &msg, &sig));
        }
    }

    fn u_of(n: u128) -> [u8; 32] {
        let mut u = [0u8; 32];
        u[..16].copy_from_slice(&n.to_le_bytes());
        u
    }

    /// p + k for a small k, little-endian (p's low byte is 0xED, so no carry for k ≤ 18).
    fn p_plus(k: u8) -> [u8; 32] {
        let mut u = P;
        u[0] += k;
        u
    }

    #[test]
    fn real_keys_are_canonical_points_of_large_order() {
        let mut rng = rand::thread_rng();
        for _ in 0..200 {
            let key = KeyPair::generate(&mut rng).public_key();
            assert_eq!(check_point(key[1..].try_into().unwrap()), Ok(()));
        }
    }

    #[test]
    fn every_class_of_bad_point_is_refused() {
        for u in SMALL_ORDER_U {
            assert_eq!(check_point(&u), Err(PointFault::SmallOrder), "{u:02x?}");
            // The list is right: each one really is of small order (or not on the curve at all).
            assert!(MontgomeryPoint(u)
                .to_edwards(0)
                .is_none_or(|p| p.is_small_order()));
        }
        assert_eq!(check_point(&[0; 32]), Err(PointFault::SmallOrder));
        // p (≡ 0), p + 1 (≡ 1), and a large-order key plus p are second encodings.
        assert_eq!(check_point(&P), Err(PointFault::NonCanonical));
        assert_eq!(check_point(&p_plus(1)), Err(PointFault::NonCanonical));
        assert_eq!(check_point(&[0xFF; 32]), Err(PointFault::TopBitSet));
        let key = KeyPair::generate(&mut rand::thread_rng()).public_key();
        let mut high = <[u8; 32]>::try_from(&key[1..]).unwrap();
        high[31] |= 0x80;
        assert_eq!(check_point(&high), Err(PointFault::TopBitSet));
        // Some small u are on the twist; 2 is one of them.
        assert_eq!(check_point(&u_of(2)), Err(PointFault::NotOnCurve));
        assert_eq!(check_point(&u_of(9)), Ok(()), "the base point");
    }

    /// A signature "by" the all-zero identity key, made without any private key: R and s are
    /// chosen so that s·B − h·A = R holds because A has order 2. The old verifier accepted it.
    fn forge_for_zero_identity(message: &[u8]) -> Option<Vec<u8>> {
        let a = MontgomeryPoint([0; 32]).to_edwards(0)?;
        let cap_a = a.compress();
        let identity = EdwardsPoint::default().compress();
        for cap_r in [identity, cap_a] {
            let h = Scalar::from_hash(
                Sha512::new()
                    .chain_update(cap_r.as_bytes())
                    .chain_update(cap_a.as_bytes())
                    .chain_update(message),
            );
            let s = Scalar::ZERO;
            if EdwardsPoint::vartime_double_scalar_mul_basepoint(&h, &-a, &s).compress() == cap_r {
                let mut sig = cap_r.as_bytes().to_vec();
                sig.extend_from_slice(s.as_bytes());
                return Some(sig);
            }
        }
        None
    }

    #[test]
    fn a_signature_forged_for_a_low_order_identity_does_not_verify() {
        let mut rng = rand::thread_rng();
        let mut forged = 0;
        for _ in 0..20 {
            let msg = KeyPair::generate(&mut rng).public_key();
            if let Some(sig) = forge_for_zero_identity(&msg) {
                forged += 1;
                let mut zero = vec![EC_KEY_PREFIX];
                zero.extend_from_slice(&[0; 32]);
                assert!(!verify(&zero, &msg, &sig));
            }
        }
        assert!(forged > 0, "the forgery works for about 3 messages in 4");
    }

    #[test]
    fn malformed_inputs_are_rejected_not_panicking() {
        assert!(!verify(&[5u8; 10], b"m", &[0u8; 64]));
        assert!(!verify(&[5u8; 33], b"m", &[0u8; 63]));
        assert!(!verify(&[5u8; 33], b"m", &[0xFFu8; 64]));
    }
}
