//! Which device a leaf is: its BasicCredential's identity is the text `"<user uuid>/<device id>"`.

use mls_rs::identity::SigningIdentity;

use crate::model::{DeviceAddress, MAX_DEVICE_ID};

/// The credential identity of `device`, as its MLS client must put it into its BasicCredential.
pub fn identity(device: DeviceAddress) -> Vec<u8> {
    format!("{}/{}", device.user_id, device.device_id).into_bytes()
}

/// The device a credential identity names. Only the exact form [`identity`] writes is accepted
/// (lowercase hyphenated uuid, decimal device id without sign or leading zero), so one device has
/// one identity and mls-rs's uniqueness of identities in the tree is uniqueness of devices.
pub fn device_of(identity_bytes: &[u8]) -> Option<DeviceAddress> {
    let text = std::str::from_utf8(identity_bytes).ok()?;
    let (user, device) = text.split_once('/')?;
    let user_id = uuid::Uuid::parse_str(user).ok()?;
    let device_id: u32 = device.parse().ok()?;
    if !(1..=MAX_DEVICE_ID).contains(&device_id) {
        return None;
    }
    let address = DeviceAddress::new(user_id, device_id);
    (identity(address) == identity_bytes).then_some(address)
}

/// The device of a leaf's signing identity (None: not a basic credential, or not a device).
pub(crate) fn device_of_signer(signer: &SigningIdentity) -> Option<DeviceAddress> {
    device_of(signer.credential.as_basic()?.identifier())
}
