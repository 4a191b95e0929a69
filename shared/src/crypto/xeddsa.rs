//! XEdDSA over Curve25519 as Signal uses it: a Montgomery (X25519) identity key signs with an
//! Ed25519-style signature whose sign bit travels in the top bit of the last signature byte.

use curve25519_dalek::constants::ED25519_BASEPOINT_TABLE;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::montgomery::MontgomeryPoint;
use curve25519_dalek::scalar::Scalar;
use sha2::{Digest, Sha512};
use subtle::ConstantTimeEq;

use crate::validation::{EC_KEY_LEN, EC_KEY_PREFIX, SIGNATURE_LEN};

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

    #[test]
    fn malformed_inputs_are_rejected_not_panicking() {
        assert!(!verify(&[5u8; 10], b"m", &[0u8; 64]));
        assert!(!verify(&[5u8; 33], b"m", &[0u8; 63]));
        assert!(!verify(&[5u8; 33], b"m", &[0xFFu8; 64]));
    }
}
