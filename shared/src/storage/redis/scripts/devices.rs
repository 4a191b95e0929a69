//! `devices.lua`: an account's device list taken unless the copy held is as new.

use redis::Value;

use super::{Call, Reply, DEVICES};
use crate::error::Result;
use crate::model::{DeviceList, UserId};
use crate::storage::redis::RedisKeys;

pub(crate) fn call(keys: &RedisKeys, user_id: UserId, list: &DeviceList) -> Call {
    let call = DEVICES
        .call()
        .key(keys.devices(user_id))
        .arg(keys.user_base(user_id))
        .arg(list.version);
    // From DEVICES_AT: pairs of device id and `<registration id>:<created at>`.
    list.devices.iter().fold(call, |call, d| {
        call.arg(d.device_id)
            .arg(format!("{}:{}", d.registration_id, d.created_at))
    })
}

/// Whether the list replaced the copy held (false: the copy was as new).
pub(crate) fn decode(reply: Value) -> Result<bool> {
    let reply = Reply::new(&DEVICES, reply)?;
    let taken = match reply.tag() {
        "taken" => true,
        "kept" => false,
        _ => return Err(reply.unknown()),
    };
    reply.end()?;
    Ok(taken)
}

#[cfg(test)]
mod tests {
    use super::super::tests::{constant, named, shape};
    use super::*;
    use crate::model::Device;

    #[test]
    fn the_call_has_the_layout_the_script_names() {
        let device = |device_id| Device {
            device_id,
            registration_id: 9,
            created_at: 1,
        };
        let list = DeviceList {
            version: 3,
            devices: vec![device(1), device(2)],
        };
        let (keys, args) = named(&DEVICES);
        assert_eq!(constant(&DEVICES, "DEVICES_AT"), args + 1);
        let c = call(&RedisKeys::new(""), uuid::Uuid::nil(), &list);
        assert_eq!(shape(&c), (keys, args + 4));
        let s = |t: &str| Value::BulkString(t.as_bytes().to_vec());
        assert!(decode(Value::Array(vec![s("taken")])).unwrap());
        assert!(!decode(Value::Array(vec![s("kept")])).unwrap());
        assert!(decode(Value::Int(1)).is_err());
    }
}
