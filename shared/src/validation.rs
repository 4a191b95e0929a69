//! Field rules of the API's encoding section (docs/api.md): base64, key lengths and prefixes, ids, names.

use base64::alphabet;
use base64::engine::general_purpose::STANDARD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;

use crate::error::{Error, Result};

pub use crate::crypto::xeddsa::{EC_KEY_LEN, EC_KEY_PREFIX, SIGNATURE_LEN};
/// A serialized Kyber-1024 public key: the type byte, then the key (libsignal's format).
pub const KYBER_KEY_LEN: usize = 1569;
pub const KYBER_KEY_PREFIX: u8 = 0x08;
pub const MAX_KEY_ID: u64 = (1 << 31) - 1;
pub const MAX_BATCH: usize = 100;
/// Signal registration ids are 14-bit.
pub const MAX_REGISTRATION_ID: u64 = 0x3FFF;

/// Standard alphabet; correct padding or none at all.
const INPUT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Decodes standard base64, padding optional.
pub fn base64(field: &str, value: &str) -> Result<Vec<u8>> {
    INPUT
        .decode(value)
        .map_err(|_| Error::invalid(format!("{field} is not valid base64")))
}

/// Encodes standard base64 with padding, as the API's output rule says.
pub fn encode(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// A device id in a path: a number from 1 to 255.
pub fn device_id(value: &str) -> Result<crate::ids::DeviceId> {
    // Plain decimal only: no sign, no leading zero, so each device has one spelling.
    let plain =
        !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) && !value.starts_with('0');
    plain
        .then(|| value.parse::<crate::ids::DeviceId>().ok())
        .flatten()
        .filter(|d| (1..=crate::ids::MAX_DEVICE_ID).contains(d))
        .ok_or_else(|| Error::invalid("device_id must be a number from 1 to 255"))
}

/// Encodes unpadded URL-safe base64: random identifiers that travel in paths and codes.
pub fn encode_url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// An EC key also has to be a usable Curve25519 point (see `xeddsa::check_point`): a key no
/// private key stands behind would let signatures be forged or hand out a useless prekey.
pub fn ec_public_key(field: &str, value: &str) -> Result<Vec<u8>> {
    let bytes = key(field, value, EC_KEY_LEN, EC_KEY_PREFIX, "an EC public key")?;
    let u: &[u8; 32] = bytes[1..].try_into().expect("length checked");
    crate::crypto::xeddsa::check_point(u).map_err(|fault| {
        Error::invalid(format!(
            "{field} is not a valid Curve25519 public key: {}",
            fault.reason()
        ))
    })?;
    Ok(bytes)
}

pub fn kyber_public_key(field: &str, value: &str) -> Result<Vec<u8>> {
    key(
        field,
        value,
        KYBER_KEY_LEN,
        KYBER_KEY_PREFIX,
        "a Kyber public key",
    )
}

fn key(field: &str, value: &str, len: usize, prefix: u8, what: &str) -> Result<Vec<u8>> {
    let bytes = base64(field, value)?;
    if bytes.len() != len || bytes[0] != prefix {
        return Err(Error::invalid(format!(
            "{field} must be {what}: {len} bytes starting with 0x{prefix:02x}"
        )));
    }
    Ok(bytes)
}

pub fn signature(field: &str, value: &str) -> Result<Vec<u8>> {
    let bytes = base64(field, value)?;
    if bytes.len() != SIGNATURE_LEN {
        return Err(Error::invalid(format!(
            "{field} must be {SIGNATURE_LEN} bytes"
        )));
    }
    Ok(bytes)
}

pub fn key_id(field: &str, value: u64) -> Result<u32> {
    if value > MAX_KEY_ID {
        return Err(Error::invalid(format!(
            "{field} must be between 0 and {MAX_KEY_ID}"
        )));
    }
    Ok(value as u32)
}

pub fn registration_id(value: u64) -> Result<u32> {
    if value == 0 || value > MAX_REGISTRATION_ID {
        return Err(Error::invalid(format!(
            "registration_id must be between 1 and {MAX_REGISTRATION_ID}"
        )));
    }
    Ok(value as u32)
}

pub fn batch_len(field: &str, len: usize, min: usize) -> Result<()> {
    if len < min || len > MAX_BATCH {
        return Err(Error::invalid(format!(
            "{field} must hold {min} to {MAX_BATCH} keys"
        )));
    }
    Ok(())
}

/// Usernames are case-insensitive: the lower-case form is the one stored.
pub fn username(value: &str) -> Result<String> {
    let name = value.to_ascii_lowercase();
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b));
    if !(3..=32).contains(&name.len()) || !ok_chars {
        return Err(Error::invalid(
            "username must be 3 to 32 characters of a-z 0-9 _ . -",
        ));
    }
    Ok(name)
}

pub fn password(value: &str) -> Result<()> {
    let n = value.chars().count();
    if !(8..=128).contains(&n) {
        return Err(Error::invalid("password must be 8 to 128 characters"));
    }
    Ok(())
}

pub fn user_id(value: &str) -> Result<uuid::Uuid> {
    uuid::Uuid::parse_str(value).map_err(|_| Error::UserNotFound)
}

/// A group id in a path: not a UUID, so no such group.
pub fn group_id(value: &str) -> Result<crate::groups::GroupId> {
    uuid::Uuid::parse_str(value).map_err(|_| Error::GroupNotFound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_ids_are_plain_numbers_from_1_to_255() {
        assert_eq!(device_id("1").unwrap(), 1);
        assert_eq!(device_id("255").unwrap(), 255);
        for bad in [
            "0",
            "256",
            "01",
            "+1",
            "-1",
            " 1",
            "",
            "*",
            "1e2",
            "99999999999",
        ] {
            assert!(device_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn base64_padding_is_optional_on_input_and_present_on_output() {
        assert_eq!(base64("f", "AQI=").unwrap(), vec![1, 2]);
        assert_eq!(base64("f", "AQI").unwrap(), vec![1, 2]);
        assert_eq!(encode(&[1, 2]), "AQI=");
        assert!(base64("f", "!!").is_err());
        assert!(base64("f", "AQI*").is_err());
        assert!(base64("f", "AQI==").is_err(), "wrong padding");
    }

    #[test]
    fn keys_need_length_and_prefix() {
        let mut ec = crate::crypto::xeddsa::KeyPair::generate(&mut rand::thread_rng()).public_key();
        assert!(ec_public_key("k", &encode(&ec)).is_ok());
        ec[0] = 8;
        assert!(ec_public_key("k", &encode(&ec)).is_err());
        assert!(ec_public_key("k", &encode(&[5u8; 32])).is_err());
        let mut ky = vec![0u8; 1569];
        ky[0] = 8;
        assert!(kyber_public_key("k", &encode(&ky)).is_ok());
        assert!(kyber_public_key("k", &encode(&ky[..1568])).is_err());
        assert!(signature("s", &encode(&[0u8; 63])).is_err());
    }

    #[test]
    fn ec_keys_must_be_usable_points() {
        let with_u = |u: [u8; 32]| {
            let mut k = vec![EC_KEY_PREFIX];
            k.extend_from_slice(&u);
            ec_public_key("identity_key", &encode(&k))
                .unwrap_err()
                .to_string()
        };
        let mut high = [0u8; 32];
        high[..31].copy_from_slice(&[0x11; 31]);
        high[31] = 0x80;
        let mut p = [0xFF; 32];
        p[0] = 0xED;
        p[31] = 0x7F;
        let mut two = [0u8; 32];
        two[0] = 2;
        for (u, says) in [
            ([0; 32], "low-order"),
            (high, "top bit"),
            (p, "not reduced"),
            (two, "not a point on Curve25519"),
        ] {
            let msg = with_u(u);
            assert!(
                msg.contains("identity_key is not a valid Curve25519 public key")
                    && msg.contains(says),
                "{msg}"
            );
        }
    }

    #[test]
    fn usernames_ids_and_passwords() {
        assert_eq!(username("Alice_1.x-").unwrap(), "alice_1.x-");
        assert!(username("ab").is_err());
        assert!(username(&"a".repeat(33)).is_err());
        assert!(username("al ice").is_err());
        assert!(username("älice").is_err());
        assert!(password("1234567").is_err());
        assert!(password("12345678").is_ok());
        assert!(password(&"x".repeat(129)).is_err());
        assert!(key_id("id", MAX_KEY_ID).is_ok());
        assert!(key_id("id", MAX_KEY_ID + 1).is_err());
        assert!(registration_id(0).is_err());
        assert!(registration_id(16380).is_ok());
        assert!(batch_len("b", 101, 1).is_err());
        assert!(batch_len("b", 0, 1).is_err());
        assert!(batch_len("b", 0, 0).is_ok());
    }
}
