//! `devices.lua`: an account's device list taken unless the copy held is as new.

use redis::Value;

use super::{Call, Reply, DEVICES};
use crate::error::Result;
use crate::model::{DeviceId, DeviceList, UserId};
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

/// The devices hash as the script writes it (`v` the version, device id →
/// `<registration id>:<created at>`), read back as (device id, registration id) pairs sorted by
/// device; `None` for a missing hash.
pub(crate) fn parse(hash: &[(String, String)]) -> Option<Vec<(DeviceId, u32)>> {
    if hash.is_empty() {
        return None;
    }
    let mut devices: Vec<(DeviceId, u32)> = hash
        .iter()
        .filter_map(|(field, value)| {
            let device_id = field.parse().ok()?;
            let registration_id = value.split(':').next()?.parse().ok()?;
            Some((device_id, registration_id))
        })
        .collect();
    devices.sort_unstable();
    Some(devices)
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

    /// The script names a removed device's keys from their suffixes: the same as `RedisKeys`.
    #[test]
    fn the_keys_a_removed_device_loses_are_those_of_redis_keys() {
        let body = DEVICES.body;
        let list = &body[body.find("ipairs({").unwrap() + 8..];
        let list = &list[..list.find("})").unwrap()];
        let mut in_script: Vec<String> = list
            .split(',')
            .map(|n| n.trim().trim_matches('\'').to_string())
            .collect();
        let keys = RedisKeys::new("");
        let device = crate::model::DeviceAddress::new(uuid::Uuid::nil(), 2);
        let base = format!("{}:d2:", keys.user_base(device.user_id));
        let mut in_rust: Vec<String> = keys
            .device_store(device)
            .into_iter()
            .chain([
                keys.legacy_in_flight(device),
                keys.conns(device),
                keys.conn_order(device),
                keys.ack_conns(device),
                keys.sent(device),
                keys.sent_times(device),
            ])
            .map(|k| k.strip_prefix(&base).unwrap().to_string())
            .collect();
        in_script.sort();
        in_rust.sort();
        assert_eq!(in_script, in_rust);
    }

    #[test]
    fn the_hash_reads_back_as_devices_and_registrations() {
        let hash = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        assert_eq!(parse(&[]), None);
        assert_eq!(
            parse(&hash(&[("v", "3"), ("2", "77:5"), ("1", "9:1")])),
            Some(vec![(1, 9), (2, 77)])
        );
        assert_eq!(parse(&hash(&[("v", "3")])), Some(vec![]));
    }
}
