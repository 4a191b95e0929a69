//! Signature checks, password hashing and tokens.

pub mod password;
pub mod tokens;
pub mod xeddsa;
