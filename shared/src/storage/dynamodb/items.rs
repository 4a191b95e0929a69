//! Item ⇄ domain conversion for the DynamoDB adapters.

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use uuid::Uuid;

use super::Item;
use crate::error::{Error, Result};
use crate::groups::{Group, GroupId, Member, MemberState, Membership, MlsEpoch, Protocol, Role};
use crate::model::{
    Device, DeviceAddress, DeviceList, OneTimeKey, Profile, RetiredRegistrations, SignedKey,
    PRIMARY_DEVICE,
};

pub const PROFILE_SK: &str = "profile";
pub const EC_PREFIX: &str = "ec#";
pub const KYBER_PREFIX: &str = "ky#";

pub fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

pub fn n(v: impl std::fmt::Display) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

pub fn b(v: &[u8]) -> AttributeValue {
    AttributeValue::B(Blob::new(v.to_vec()))
}

pub fn user_pk(user_id: Uuid) -> String {
    format!("user#{user_id}")
}

/// A device's partition in the keys table: device 1 keeps the bare user id it had before devices.
pub fn keys_pk(device: DeviceAddress) -> String {
    match device.device_id {
        PRIMARY_DEVICE => device.user_id.to_string(),
        n => format!("{}#{n}", device.user_id),
    }
}

pub fn name_pk(username: &str) -> String {
    format!("name#{username}")
}

/// Zero-padded so sort order is numeric order.
pub fn ec_sk(key_id: u32) -> String {
    format!("{EC_PREFIX}{key_id:010}")
}

pub fn kyber_sk(key_id: u32) -> String {
    format!("{KYBER_PREFIX}{key_id:010}")
}

pub fn key(pk: impl Into<String>, sk: impl Into<String>) -> Item {
    Item::from([("pk".to_string(), s(pk)), ("sk".to_string(), s(sk))])
}

pub(super) fn corrupt(what: &str) -> Error {
    Error::Internal(format!("stored item lacks or mangles {what}"))
}

pub fn get_s<'a>(item: &'a Item, name: &str) -> Result<&'a str> {
    item.get(name)
        .and_then(|v| v.as_s().ok())
        .map(String::as_str)
        .ok_or_else(|| corrupt(name))
}

pub fn get_n<T: std::str::FromStr>(item: &Item, name: &str) -> Result<T> {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| corrupt(name))
}

pub fn get_b<'a>(item: &'a Item, name: &str) -> Result<&'a [u8]> {
    item.get(name)
        .and_then(|v| v.as_b().ok())
        .map(|b| b.as_ref())
        .ok_or_else(|| corrupt(name))
}

pub fn get_uuid(item: &Item, name: &str) -> Result<Uuid> {
    Uuid::parse_str(get_s(item, name)?).map_err(|_| corrupt(name))
}

pub fn one_time_item(pk: &str, k: &OneTimeKey) -> Item {
    let mut item = key(pk, ec_sk(k.key_id));
    item.insert("key_id".into(), n(k.key_id));
    item.insert("public_key".into(), b(&k.public_key));
    item
}

pub fn kyber_item(pk: &str, k: &SignedKey) -> Item {
    let mut item = key(pk, kyber_sk(k.key_id));
    item.insert("key_id".into(), n(k.key_id));
    item.insert("public_key".into(), b(&k.public_key));
    item.insert("signature".into(), b(&k.signature));
    item
}

/// The items of a batch of one-time keys, EC and Kyber, as registration and uploads store them.
pub fn one_time_items(pk: &str, one_time: &[OneTimeKey], kyber: &[SignedKey]) -> Vec<Item> {
    one_time
        .iter()
        .map(|k| one_time_item(pk, k))
        .chain(kyber.iter().map(|k| kyber_item(pk, k)))
        .collect()
}

pub fn one_time_from(item: &Item) -> Result<OneTimeKey> {
    Ok(OneTimeKey {
        key_id: get_n(item, "key_id")?,
        public_key: get_b(item, "public_key")?.to_vec(),
    })
}

pub fn kyber_from(item: &Item) -> Result<SignedKey> {
    Ok(SignedKey {
        key_id: get_n(item, "key_id")?,
        public_key: get_b(item, "public_key")?.to_vec(),
        signature: get_b(item, "signature")?.to_vec(),
    })
}

/// Attribute names of a signed key inside the profile item: `<p>_id`, `<p>_key`, `<p>_sig`.
pub fn signed_attrs(prefix: &str, k: &SignedKey) -> [(String, AttributeValue); 3] {
    [
        (format!("{prefix}_id"), n(k.key_id)),
        (format!("{prefix}_key"), b(&k.public_key)),
        (format!("{prefix}_sig"), b(&k.signature)),
    ]
}

fn signed_from(item: &Item, prefix: &str) -> Result<Option<SignedKey>> {
    if !item.contains_key(&format!("{prefix}_key")) {
        return Ok(None);
    }
    Ok(Some(SignedKey {
        key_id: get_n(item, &format!("{prefix}_id"))?,
        public_key: get_b(item, &format!("{prefix}_key"))?.to_vec(),
        signature: get_b(item, &format!("{prefix}_sig"))?.to_vec(),
    }))
}

pub const SIGNED: &str = "spk";
pub const KYBER_LAST_RESORT: &str = "kyl";

pub fn profile_item(pk: &str, p: &Profile) -> Item {
    let mut item = key(pk, PROFILE_SK);
    item.insert("registration_id".into(), n(p.registration_id));
    item.insert("identity_key".into(), b(&p.identity_key));
    item.extend(signed_attrs(SIGNED, &p.signed_prekey));
    if let Some(k) = &p.kyber_last_resort {
        item.extend(signed_attrs(KYBER_LAST_RESORT, k));
    }
    item
}

pub fn profile_from(item: &Item) -> Result<Profile> {
    Ok(Profile {
        registration_id: get_n(item, "registration_id")?,
        identity_key: get_b(item, "identity_key")?.to_vec(),
        signed_prekey: signed_from(item, SIGNED)?.ok_or_else(|| corrupt("signed prekey"))?,
        kyber_last_resort: signed_from(item, KYBER_LAST_RESORT)?,
    })
}

/// The user item's `devices` map: `"<id>"` → `{registration_id, created_at}`.
pub fn devices_attr(devices: &[Device]) -> AttributeValue {
    AttributeValue::M(
        devices
            .iter()
            .map(|d| {
                let entry = AttributeValue::M(
                    [
                        ("registration_id".to_string(), n(d.registration_id)),
                        ("created_at".to_string(), n(d.created_at)),
                    ]
                    .into(),
                );
                (d.device_id.to_string(), entry)
            })
            .collect(),
    )
}

/// The device list of a user item; `None` for an item from before devices (no `devices`).
pub fn device_list_from(item: &Item) -> Result<Option<DeviceList>> {
    let Some(map) = item.get("devices") else {
        return Ok(None);
    };
    let map = map.as_m().map_err(|_| corrupt("devices"))?;
    let mut devices = map
        .iter()
        .map(|(id, entry)| {
            let entry = entry.as_m().map_err(|_| corrupt("devices"))?;
            Ok(Device {
                device_id: id.parse().map_err(|_| corrupt("devices"))?,
                registration_id: get_n(entry, "registration_id")?,
                created_at: get_n(entry, "created_at")?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    devices.sort_by_key(|d| d.device_id);
    Ok(Some(DeviceList {
        version: get_n(item, "devices_version")?,
        devices,
    }))
}

/// The user item's attribute of [`RetiredRegistrations`].
pub const RETIRED: &str = "retired_registrations";

/// `"<device id>"` → list of registration ids, oldest first (a list keeps the order a set
/// would lose, and the oldest is the one to drop).
pub fn retired_attr(retired: &RetiredRegistrations) -> AttributeValue {
    AttributeValue::M(
        retired
            .0
            .iter()
            .map(|(id, ids)| {
                let list = AttributeValue::L(ids.iter().map(n).collect());
                (id.to_string(), list)
            })
            .collect(),
    )
}

/// The retired registration ids of a user item; none for an item written before they were kept.
pub fn retired_from(item: &Item) -> Result<RetiredRegistrations> {
    let Some(map) = item.get(RETIRED) else {
        return Ok(RetiredRegistrations::default());
    };
    let map = map.as_m().map_err(|_| corrupt(RETIRED))?;
    let retired = map
        .iter()
        .map(|(id, list)| {
            let ids = list
                .as_l()
                .map_err(|_| corrupt(RETIRED))?
                .iter()
                .map(|v| v.as_n().ok().and_then(|v| v.parse().ok()))
                .collect::<Option<Vec<u32>>>()
                .ok_or_else(|| corrupt(RETIRED))?;
            Ok((id.parse().map_err(|_| corrupt(RETIRED))?, ids))
        })
        .collect::<Result<_>>()?;
    Ok(RetiredRegistrations(retired))
}

pub const GROUP_SK: &str = "group";
pub const GROUP_PREFIX: &str = "group#";

pub fn group_pk(group_id: GroupId) -> String {
    format!("{GROUP_PREFIX}{group_id}")
}

/// The sort key of a user's index entry for a group (in the user's partition of the groups
/// table): sorted by group id, so the list pages by it.
pub fn group_sk(group_id: GroupId) -> String {
    format!("{GROUP_PREFIX}{group_id}")
}

fn role_str(role: Role) -> &'static str {
    match role {
        Role::Admin => "admin",
        Role::Member => "member",
    }
}

fn role_from(v: &str) -> Result<Role> {
    match v {
        "admin" => Ok(Role::Admin),
        "member" => Ok(Role::Member),
        _ => Err(corrupt("role")),
    }
}

fn state_str(state: MemberState) -> &'static str {
    match state {
        MemberState::Invited => "invited",
        MemberState::Member => "member",
    }
}

fn state_from(v: &str) -> Result<MemberState> {
    match v {
        "invited" => Ok(MemberState::Invited),
        "member" => Ok(MemberState::Member),
        _ => Err(corrupt("state")),
    }
}

/// One roster entry as `"<user_id> <role> <state> <since>"`, followed in an MLS group by
/// `" <device>,<device>…"` (its devices in the tree): a string is about half the size of a map
/// with named attributes, and every send reads the whole roster (1,500 entries at most, ~70 bytes
/// each, ~100 KB: the read units a send pays follow the item size).
fn member_attr(m: &Member) -> AttributeValue {
    let mut entry = format!(
        "{} {} {} {}",
        m.user_id,
        role_str(m.role),
        state_str(m.state),
        m.since
    );
    if !m.mls_devices.is_empty() {
        let devices: Vec<String> = m.mls_devices.iter().map(u32::to_string).collect();
        entry.push(' ');
        entry.push_str(&devices.join(","));
    }
    s(entry)
}

/// Reads the entries written before MLS (four fields) too: they have no devices in a tree.
fn member_from(v: &AttributeValue) -> Result<Member> {
    let v = v.as_s().map_err(|_| corrupt("members"))?;
    let mut parts = v.split(' ');
    let mut next = || parts.next().ok_or_else(|| corrupt("members"));
    let user_id = Uuid::parse_str(next()?).map_err(|_| corrupt("members"))?;
    let role = role_from(next()?)?;
    let state = state_from(next()?)?;
    let since = next()?.parse().map_err(|_| corrupt("members"))?;
    let mls_devices = match parts.next() {
        None => vec![],
        Some(list) => list
            .split(',')
            .map(|d| d.parse().map_err(|_| corrupt("members")))
            .collect::<Result<_>>()?,
    };
    if parts.next().is_some() {
        return Err(corrupt("members"));
    }
    Ok(Member {
        user_id,
        role,
        state,
        since,
        mls_devices,
    })
}

pub fn group_item(g: &Group) -> Item {
    let mut item = key(group_pk(g.id), GROUP_SK);
    item.insert("version".into(), n(g.version));
    item.insert("created_at".into(), n(g.created_at));
    item.insert(
        "members".into(),
        AttributeValue::L(g.members.iter().map(member_attr).collect()),
    );
    if let Some(meta) = &g.meta {
        item.insert("meta".into(), s(meta));
    }
    // A Signal group's item stays as it was before MLS: no attribute says so.
    if g.protocol == Protocol::Mls {
        item.insert("protocol".into(), s(MLS_PROTOCOL));
    }
    if let Some(at) = &g.mls {
        item.insert("mls".into(), epoch_attr(at));
    }
    item
}

pub fn group_from(item: &Item) -> Result<Group> {
    let id = get_s(item, "pk")?
        .strip_prefix(GROUP_PREFIX)
        .and_then(|id| Uuid::parse_str(id).ok())
        .ok_or_else(|| corrupt("pk"))?;
    let members = item
        .get("members")
        .and_then(|v| v.as_l().ok())
        .ok_or_else(|| corrupt("members"))?
        .iter()
        .map(member_from)
        .collect::<Result<_>>()?;
    Ok(Group {
        id,
        version: get_n(item, "version")?,
        meta: item
            .get("meta")
            .map(|_| get_s(item, "meta"))
            .transpose()?
            .map(str::to_string),
        created_at: get_n(item, "created_at")?,
        members,
        protocol: match item.get("protocol") {
            None => Protocol::Signal,
            Some(_) => protocol_from(get_s(item, "protocol")?)?,
        },
        mls: item.get("mls").map(epoch_from).transpose()?,
    })
}

/// A user's index entry for the group `m` is in.
pub fn membership_item(user_id: Uuid, group_id: GroupId, m: &Member) -> Item {
    let mut item = key(user_pk(user_id), group_sk(group_id));
    item.insert("role".into(), s(role_str(m.role)));
    item.insert("state".into(), s(state_str(m.state)));
    item
}

pub fn membership_from(item: &Item) -> Result<Membership> {
    let group_id = get_s(item, "sk")?
        .strip_prefix(GROUP_PREFIX)
        .and_then(|id| Uuid::parse_str(id).ok())
        .ok_or_else(|| corrupt("sk"))?;
    Ok(Membership {
        group_id,
        role: role_from(get_s(item, "role")?)?,
        state: state_from(get_s(item, "state")?)?,
    })
}

// ---- an MLS group's fields of the group item ----

pub const MLS_PROTOCOL: &str = "mls";

pub fn protocol_from(v: &str) -> Result<Protocol> {
    match v {
        "signal" => Ok(Protocol::Signal),
        MLS_PROTOCOL => Ok(Protocol::Mls),
        _ => Err(corrupt("protocol")),
    }
}

/// The group item's `mls` map.
pub fn epoch_attr(at: &MlsEpoch) -> AttributeValue {
    let map = Item::from([
        ("epoch".to_string(), n(at.epoch)),
        ("generation".to_string(), n(at.generation)),
        ("state_chunks".to_string(), n(at.state_chunks)),
        ("info_chunks".to_string(), n(at.info_chunks)),
    ]);
    AttributeValue::M(map)
}

pub fn epoch_from(v: &AttributeValue) -> Result<MlsEpoch> {
    let map = v.as_m().map_err(|_| corrupt("mls"))?;
    Ok(MlsEpoch {
        epoch: get_n(map, "epoch")?,
        generation: get_n(map, "generation")?,
        state_chunks: get_n(map, "state_chunks")?,
        info_chunks: get_n(map, "info_chunks")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(role: Role, state: MemberState, since: u64) -> Member {
        Member {
            user_id: Uuid::new_v4(),
            role,
            state,
            since,
            mls_devices: vec![],
        }
    }

    #[test]
    fn groups_and_index_entries_round_trip() {
        let mut g = Group {
            id: Uuid::new_v4(),
            version: 3,
            meta: Some("bWV0YQ==".into()),
            created_at: 1_700_000_000_000,
            members: vec![
                member(Role::Admin, MemberState::Member, 5),
                member(Role::Member, MemberState::Invited, 6),
            ],
            protocol: Protocol::Signal,
            mls: None,
        };
        assert_eq!(group_from(&group_item(&g)).unwrap(), g);
        g.meta = None;
        assert_eq!(group_from(&group_item(&g)).unwrap(), g);
        let entry = membership_item(g.members[1].user_id, g.id, &g.members[1]);
        assert_eq!(
            membership_from(&entry).unwrap(),
            Membership {
                group_id: g.id,
                role: Role::Member,
                state: MemberState::Invited
            }
        );
    }

    #[test]
    fn mls_groups_round_trip_with_their_epoch_and_tree_devices() {
        let mut g = Group {
            id: Uuid::new_v4(),
            version: 9,
            meta: None,
            created_at: 1_700_000_000_000,
            members: vec![
                member(Role::Admin, MemberState::Member, 5),
                member(Role::Member, MemberState::Member, 6),
                member(Role::Member, MemberState::Invited, 7),
            ],
            protocol: Protocol::Mls,
            mls: None,
        };
        // Initialised or not.
        assert_eq!(group_from(&group_item(&g)).unwrap(), g);
        g.members[0].mls_devices = vec![1, 2, 255];
        g.members[1].mls_devices = vec![3];
        g.mls = Some(crate::groups::MlsEpoch {
            epoch: 12,
            generation: 1,
            state_chunks: 3,
            info_chunks: 1,
        });
        let item = group_item(&g);
        assert_eq!(group_from(&item).unwrap(), g);
        let first = item["members"].as_l().unwrap()[0].as_s().unwrap().clone();
        assert!(first.ends_with(" 5 1,2,255"), "{first}");
        let mut bad = item.clone();
        bad.insert("protocol".into(), s("smoke-signals"));
        assert!(group_from(&bad).is_err());
    }

    /// A group item as stored before MLS: no `protocol`, no `mls`, four fields per roster entry.
    #[test]
    fn groups_stored_before_mls_read_as_signal_groups() {
        let (admin, invitee) = (Uuid::new_v4(), Uuid::new_v4());
        let id = Uuid::new_v4();
        let item = Item::from([
            ("pk".to_string(), s(format!("group#{id}"))),
            ("sk".to_string(), s("group")),
            ("version".to_string(), n(4)),
            ("created_at".to_string(), n(1_700_000_000_000u64)),
            (
                "members".to_string(),
                AttributeValue::L(vec![
                    s(format!("{admin} admin member 10")),
                    s(format!("{invitee} member invited 11")),
                ]),
            ),
        ]);
        let g = group_from(&item).unwrap();
        assert_eq!(g.protocol, Protocol::Signal);
        assert_eq!(g.mls, None);
        assert_eq!(g.version, 4);
        assert_eq!(g.user_ids(), vec![admin, invitee]);
        assert!(g.members.iter().all(|m| m.mls_devices.is_empty()));
        assert_eq!(g.members[1].state, MemberState::Invited);
        // Written back unchanged, it is the same item: nothing was added for Signal.
        assert_eq!(group_item(&g), item);
        // A roster entry with more than one extra field is not one this code wrote.
        let mut bad = item;
        bad.insert(
            "members".into(),
            AttributeValue::L(vec![s(format!("{admin} admin member 10 1 2"))]),
        );
        assert!(group_from(&bad).is_err());
    }

    #[test]
    fn profile_round_trips_and_sort_keys_sort_numerically() {
        let k = |id| SignedKey {
            key_id: id,
            public_key: vec![5; 33],
            signature: vec![1; 64],
        };
        let p = Profile {
            registration_id: 7,
            identity_key: vec![5; 33],
            signed_prekey: k(1),
            kyber_last_resort: Some(k(2)),
        };
        let id = Uuid::new_v4().to_string();
        assert_eq!(profile_from(&profile_item(&id, &p)).unwrap(), p);
        let p2 = Profile {
            kyber_last_resort: None,
            ..p
        };
        assert_eq!(profile_from(&profile_item(&id, &p2)).unwrap(), p2);
        assert!(ec_sk(9) < ec_sk(10) && ec_sk(10) < ec_sk(2_000_000_000));
    }

    #[test]
    fn device_lists_round_trip_sorted() {
        let d = |device_id, registration_id| Device {
            device_id,
            registration_id,
            created_at: 5,
        };
        let item = Item::from([
            ("devices".to_string(), devices_attr(&[d(3, 9), d(1, 7)])),
            ("devices_version".to_string(), n(4)),
        ]);
        let list = device_list_from(&item).unwrap().unwrap();
        assert_eq!(list.version, 4);
        assert_eq!(list.devices, vec![d(1, 7), d(3, 9)]);
        assert_eq!(device_list_from(&Item::new()).unwrap(), None);
    }

    #[test]
    fn retired_registrations_round_trip_oldest_first_and_keep_the_newest() {
        let gone = |device_id, registration_id| Device {
            device_id,
            registration_id,
            created_at: 5,
        };
        let mut retired = RetiredRegistrations::default();
        for r in 1..=crate::model::RETIRED_REGISTRATIONS_KEPT as u32 + 2 {
            retired.retire(&gone(2, r));
        }
        retired.retire(&gone(3, 7));
        retired.retire(&gone(2, 5));
        let item = Item::from([(RETIRED.to_string(), retired_attr(&retired))]);
        let back = retired_from(&item).unwrap();
        assert_eq!(back, retired);
        assert_eq!(back.0[&2], [3, 4, 6, 7, 8, 9, 10, 5]);
        assert!(back.repeats(2, 5) && back.repeats(3, 7));
        assert!(!back.repeats(2, 1) && !back.repeats(3, 5) && !back.repeats(4, 7));
        assert_eq!(retired_from(&Item::new()).unwrap(), Default::default());
    }
}
