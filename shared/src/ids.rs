//! The identifiers every layer names: users, their devices and one device of one user. A leaf:
//! it imports nothing of the crate, so validation, the wire shapes and the storage adapters can
//! all depend on it.

use uuid::Uuid;

pub type UserId = Uuid;
/// A device of an account: 1 is the primary (made at registration), linked devices take the
/// smallest free id from 2 on.
pub type DeviceId = u32;
pub const PRIMARY_DEVICE: DeviceId = 1;
/// The largest device id the API accepts (Signal's device ids are bytes too).
pub const MAX_DEVICE_ID: DeviceId = 255;

/// One device of one user: what an inbox, a connection and a set of prekeys belong to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeviceAddress {
    pub user_id: UserId,
    pub device_id: DeviceId,
}

impl DeviceAddress {
    pub fn new(user_id: UserId, device_id: DeviceId) -> Self {
        Self { user_id, device_id }
    }

    pub fn primary(user_id: UserId) -> Self {
        Self::new(user_id, PRIMARY_DEVICE)
    }
}

/// A bare user id addresses its primary device (what every address was before devices).
impl From<UserId> for DeviceAddress {
    fn from(user_id: UserId) -> Self {
        Self::primary(user_id)
    }
}
