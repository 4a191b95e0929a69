//! Item ⇄ domain conversion of what MLS adds: a group's tracked epoch, the chunks of its state
//! and GroupInfo (items beside the group item), and the KeyPackages of the keys table.

use aws_sdk_dynamodb::types::AttributeValue;
use uuid::Uuid;

use super::items::{b, corrupt, get_b, get_n, get_s, key, keys_pk, n, s};
use super::Item;
use crate::error::Result;
use crate::groups::MlsEpoch;
use crate::model::DeviceAddress;
use crate::storage::{KeyPackageItem, MlsBlobs, MlsLogEntry, MLS_CHUNK_BYTES};

fn device_str(d: &DeviceAddress) -> String {
    format!("{}/{}", d.user_id, d.device_id)
}

fn device_from(v: &str) -> Option<DeviceAddress> {
    let (user, device) = v.split_once('/')?;
    Some(DeviceAddress::new(
        Uuid::parse_str(user).ok()?,
        device.parse().ok()?,
    ))
}

/// Every chunk of a group's MLS state sorts under this, in the group's partition.
pub const CHUNK_PREFIX: &str = "mls#";

/// The chunks of one epoch: `mls#<generation>#<epoch>#` (the closing `#` keeps epoch 2's prefix
/// from matching epoch 20).
pub fn epoch_prefix(at: &MlsEpoch) -> String {
    format!("{CHUNK_PREFIX}{}#{}#", at.generation, at.epoch)
}

const STATE: char = 's';
const INFO: char = 'i';

/// The keys of `at`'s chunks: `<prefix>s<n>` for the state, `<prefix>i<n>` for the GroupInfo.
pub fn chunk_keys(pk: &str, at: &MlsEpoch) -> Vec<Item> {
    let prefix = epoch_prefix(at);
    (0..at.state_chunks)
        .map(|i| (STATE, i))
        .chain((0..at.info_chunks).map(|i| (INFO, i)))
        .map(|(kind, i)| key(pk, format!("{prefix}{kind}{i}")))
        .collect()
}

/// The items of `blobs` stored as `at`'s chunks (attribute `b`).
pub fn chunk_items(pk: &str, at: &MlsEpoch, blobs: &MlsBlobs) -> Vec<Item> {
    let pieces = blobs
        .state
        .chunks(MLS_CHUNK_BYTES)
        .chain(blobs.group_info.chunks(MLS_CHUNK_BYTES));
    chunk_keys(pk, at)
        .into_iter()
        .zip(pieces)
        .map(|(mut item, piece)| {
            item.insert("b".into(), b(piece));
            item
        })
        .collect()
}

/// The blobs of `at` from its chunk items (in any order); `None` unless every chunk is there.
pub fn join_chunks(items: &[Item], at: &MlsEpoch) -> Result<Option<MlsBlobs>> {
    let prefix = epoch_prefix(at);
    let mut state: Vec<Option<&[u8]>> = vec![None; at.state_chunks as usize];
    let mut info: Vec<Option<&[u8]>> = vec![None; at.info_chunks as usize];
    for item in items {
        let sk = get_s(item, "sk")?;
        let Some(rest) = sk.strip_prefix(&prefix) else {
            continue;
        };
        let mut chars = rest.chars();
        let slots = match chars.next() {
            Some(STATE) => &mut state,
            Some(INFO) => &mut info,
            _ => return Err(corrupt("mls chunk key")),
        };
        let i: usize = chars
            .as_str()
            .parse()
            .map_err(|_| corrupt("mls chunk key"))?;
        if let Some(slot) = slots.get_mut(i) {
            *slot = Some(get_b(item, "b")?);
        }
    }
    fn join(slots: Vec<Option<&[u8]>>) -> Option<Vec<u8>> {
        Some(slots.into_iter().collect::<Option<Vec<_>>>()?.concat())
    }
    Ok(match (join(state), join(info)) {
        (Some(state), Some(group_info)) => Some(MlsBlobs {
            state,
            group_info,
            log: None,
        }),
        _ => None,
    })
}

/// The chunks of the Commit accepted at `epoch` of `generation`:
/// `mls#log#<generation>#<epoch>#` then `c<n>` (the Commit), `w<n>` (the Welcome), `t<n>` (the
/// tree to join with). Under `CHUNK_PREFIX`, so a group's deletion takes them too; each carries
/// `expires_at`, so the table's TTL drops them once no notice of them can be waiting.
pub fn log_prefix(generation: u32, epoch: u64) -> String {
    format!("{CHUNK_PREFIX}log#{generation}#{epoch}#")
}

/// The items of a log entry. The first carries the chunk counts and the devices the Welcome is
/// for, so a read can tell a complete entry.
pub fn log_items(
    pk: &str,
    generation: u32,
    epoch: u64,
    entry: &MlsLogEntry,
    expires_at: u64,
) -> Vec<Item> {
    let prefix = log_prefix(generation, epoch);
    let parts: [(char, &[u8]); 3] = [
        ('c', &entry.commit),
        ('w', entry.welcome.as_deref().unwrap_or_default()),
        ('t', entry.ratchet_tree.as_deref().unwrap_or_default()),
    ];
    let mut out: Vec<Item> = Vec::new();
    for (kind, bytes) in parts {
        for (i, piece) in bytes.chunks(MLS_CHUNK_BYTES).enumerate() {
            let mut item = key(pk, format!("{prefix}{kind}{i}"));
            item.insert("b".into(), b(piece));
            item.insert("expires_at".into(), n(expires_at));
            out.push(item);
        }
    }
    if let Some(first) = out.first_mut() {
        for (kind, bytes) in parts {
            let count = bytes.len().div_ceil(MLS_CHUNK_BYTES) as u64;
            first.insert(format!("n{kind}"), n(count));
        }
        if !entry.welcomed.is_empty() {
            first.insert(
                "to".into(),
                AttributeValue::L(entry.welcomed.iter().map(|d| s(device_str(d))).collect()),
            );
        }
    }
    out
}

/// A log entry from its items (in any order); `None` unless every chunk is there and it has not
/// expired at `now_secs`.
pub fn join_log(
    items: &[Item],
    generation: u32,
    epoch: u64,
    now_secs: u64,
) -> Result<Option<MlsLogEntry>> {
    let prefix = log_prefix(generation, epoch);
    let first = items
        .iter()
        .find(|i| get_s(i, "sk").is_ok_and(|sk| sk == format!("{prefix}c0")));
    let Some(first) = first else { return Ok(None) };
    if get_n::<u64>(first, "expires_at")? <= now_secs {
        return Ok(None);
    }
    let mut parts: Vec<Vec<Option<&[u8]>>> = Vec::new();
    for kind in ['c', 'w', 't'] {
        let count: usize = get_n(first, &format!("n{kind}"))?;
        let mut slots = vec![None; count];
        for item in items {
            let sk = get_s(item, "sk")?;
            let Some(i) = sk
                .strip_prefix(&prefix)
                .and_then(|r| r.strip_prefix(kind))
                .and_then(|i| i.parse::<usize>().ok())
            else {
                continue;
            };
            if let Some(slot) = slots.get_mut(i) {
                *slot = Some(get_b(item, "b")?);
            }
        }
        parts.push(slots);
    }
    let mut joined = Vec::new();
    for slots in parts {
        match slots.into_iter().collect::<Option<Vec<_>>>() {
            Some(pieces) => joined.push(pieces.concat()),
            None => return Ok(None),
        }
    }
    let welcomed = match first.get("to") {
        None => Vec::new(),
        Some(list) => list
            .as_l()
            .map_err(|_| corrupt("mls log"))?
            .iter()
            .map(|d| d.as_s().ok().and_then(|d| device_from(d)))
            .collect::<Option<_>>()
            .ok_or_else(|| corrupt("mls log devices"))?,
    };
    let tree = joined.pop().unwrap_or_default();
    let welcome = joined.pop().unwrap_or_default();
    let commit = joined.pop().unwrap_or_default();
    Ok(Some(MlsLogEntry {
        commit,
        welcome: (!welcome.is_empty()).then_some(welcome),
        ratchet_tree: (!tree.is_empty()).then_some(tree),
        welcomed,
    }))
}

/// A device's KeyPackages in its keys partition: `mlskp#<reference>`.
pub const KEY_PACKAGE_PREFIX: &str = "mlskp#";
/// The device's last-resort KeyPackage (one per device, replaced by an upload).
pub const LAST_RESORT_SK: &str = "mlslr";
const HANDOUT_PREFIX: &str = "mlsref#";
const HANDOUT_SK: &str = "mlsref";

pub fn key_package_item(device: DeviceAddress, p: &KeyPackageItem) -> Item {
    let mut item = key(
        keys_pk(device),
        format!("{KEY_PACKAGE_PREFIX}{}", p.reference),
    );
    item.insert("b".into(), b(&p.bytes));
    item
}

pub fn last_resort_item(device: DeviceAddress, p: &KeyPackageItem) -> Item {
    let mut item = key(keys_pk(device), LAST_RESORT_SK);
    item.insert("ref".into(), s(&p.reference));
    item.insert("b".into(), b(&p.bytes));
    item
}

/// A KeyPackage item of either kind.
pub fn key_package_from(item: &Item) -> Result<KeyPackageItem> {
    let sk = get_s(item, "sk")?;
    let reference = match sk.strip_prefix(KEY_PACKAGE_PREFIX) {
        Some(r) => r.to_string(),
        None => get_s(item, "ref")?.to_string(),
    };
    Ok(KeyPackageItem {
        reference,
        bytes: get_b(item, "b")?.to_vec(),
    })
}

/// The record of a handout: in a partition of its own per reference, so a Welcome's references
/// are looked up by key.
pub fn handout_key(reference: &str) -> Item {
    key(format!("{HANDOUT_PREFIX}{reference}"), HANDOUT_SK)
}

pub fn handout_item(
    reference: &str,
    device: DeviceAddress,
    by: DeviceAddress,
    expires_at: u64,
) -> Item {
    let mut item = handout_key(reference);
    item.insert("user".into(), s(device.user_id.to_string()));
    item.insert("device".into(), n(device.device_id));
    item.insert("by_user".into(), s(by.user_id.to_string()));
    item.insert("by_device".into(), n(by.device_id));
    item.insert("expires_at".into(), n(expires_at));
    item
}

/// The reference a handout record is for and the device it was handed out for, unless it
/// expired by `now` (the TTL deletes expired items only eventually).
pub fn handout_from(item: &Item, now: u64) -> Result<Option<(String, DeviceAddress)>> {
    if get_n::<u64>(item, "expires_at")? <= now {
        return Ok(None);
    }
    let reference = get_s(item, "pk")?
        .strip_prefix(HANDOUT_PREFIX)
        .ok_or_else(|| corrupt("pk"))?
        .to_string();
    let user = Uuid::parse_str(get_s(item, "user")?).map_err(|_| corrupt("user"))?;
    Ok(Some((
        reference,
        DeviceAddress::new(user, get_n(item, "device")?),
    )))
}

#[cfg(test)]
mod tests {
    use super::super::items::{epoch_attr, epoch_from};
    use super::*;

    fn epoch(state_chunks: u32, info_chunks: u32) -> MlsEpoch {
        MlsEpoch {
            epoch: 7,
            generation: 2,
            state_chunks,
            info_chunks,
        }
    }

    #[test]
    fn epochs_round_trip() {
        let at = epoch(3, 1);
        assert_eq!(epoch_from(&epoch_attr(&at)).unwrap(), at);
    }

    #[test]
    fn blobs_split_into_chunks_and_join_in_any_order() {
        let blobs = MlsBlobs {
            state: (0..2 * MLS_CHUNK_BYTES + 10).map(|i| i as u8).collect(),
            group_info: vec![9; 100],
            log: None,
        };
        let at = blobs.at(7, 2);
        assert_eq!((at.state_chunks, at.info_chunks), (3, 1));
        let mut items = chunk_items("group#x", &at, &blobs);
        assert_eq!(items.len(), 4);
        assert_eq!(get_s(&items[3], "sk").unwrap(), "mls#2#7#i0");
        items.reverse();
        assert_eq!(join_chunks(&items, &at).unwrap(), Some(blobs));
        // A missing chunk (the epoch moved on while it was read) joins to nothing.
        items.remove(1);
        assert_eq!(join_chunks(&items, &at).unwrap(), None);
        assert!(!"mls#2#70#s0".starts_with(&epoch_prefix(&at)));
    }

    #[test]
    fn key_packages_and_handouts_round_trip() {
        let device = DeviceAddress::new(Uuid::new_v4(), 2);
        let p = KeyPackageItem {
            reference: "ab01".into(),
            bytes: vec![1, 2, 3],
        };
        assert_eq!(key_package_from(&key_package_item(device, &p)).unwrap(), p);
        assert_eq!(key_package_from(&last_resort_item(device, &p)).unwrap(), p);
        let record = handout_item("ab01", device, DeviceAddress::primary(Uuid::new_v4()), 100);
        assert_eq!(
            handout_from(&record, 99).unwrap(),
            Some(("ab01".to_string(), device))
        );
        assert_eq!(handout_from(&record, 100).unwrap(), None);
    }
}
