//! The DynamoDB adapters (users, keys, sessions, groups, MLS state and KeyPackages) against two
//! independent engines: Dynoxide, the one the relay runs on locally, and moto_server, written by
//! other people. Each case runs on both (`dynoxide::…` and `moto::…`); concurrency claims use real concurrent requests.
//!
//! moto_server is not linearizable: two concurrent `TransactWriteItems` with
//! `attribute_not_exists` on the same item both succeed there, and so do two concurrent
//! conditional updates from the same value (seen while writing this suite). DynamoDB and Dynoxide
//! guarantee both. On moto the contending requests therefore go one after another: the
//! conditions themselves are still checked there, the races only on the engines that promise them.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

use aws_sdk_dynamodb::types::AttributeValue;
use futures::future::join_all;
use futures::FutureExt;
use shared::clock::unix_secs;
use shared::config::GroupLimits;
use shared::groups::{Group, Member, MemberState, Membership, Protocol, Role};
use shared::model::{
    DeviceAddress, KeyUpload, NewAccount, NewDevice, OneTimeKey, Profile, RetiredRegistrations,
    SignedKey, PRIMARY_DEVICE, RETIRED_REGISTRATIONS_KEPT,
};
use shared::storage::dynamodb::{tables, Dynamo, Tables};
use shared::storage::{
    AttachmentIndex, GroupStore, GroupWrite, KeyPackageItem, KeyPackageStore, KeyStore, MlsBlobs,
    PreviousRefresh, Rotation, SessionRecord, SessionStore, UploadRecord, UserStore,
    KEY_PACKAGE_HANDOUT_SECS,
};
use shared::Error;
use uuid::Uuid;

/// The adapters on fresh tables of one engine.
struct Engine {
    db: Arc<Dynamo>,
    /// Whether concurrent conditional writes are atomic there (see the module's note).
    linearizable: bool,
}

async fn engine(url: &str, linearizable: bool) -> Engine {
    relay_tests::stack::set_aws_credentials();
    let client = shared::storage::dynamodb::client_for_endpoint(url).await;
    let prefix = format!("a{:x}", rand::random::<u64>());
    tables::create_tables(&client, &prefix)
        .await
        .expect("create tables");
    Engine {
        db: Arc::new(Dynamo::new(client, Tables::with_prefix(&prefix))),
        linearizable,
    }
}

impl Engine {
    /// Runs the calls all at once, or one after another where the engine is not linearizable.
    async fn contend<T, F: std::future::Future<Output = T>>(&self, calls: Vec<F>) -> Vec<T> {
        if self.linearizable {
            join_all(calls).await
        } else {
            let mut out = Vec::new();
            for c in calls {
                out.push(c.await);
            }
            out
        }
    }
}

fn signed(key_id: u32) -> SignedKey {
    SignedKey {
        key_id,
        public_key: vec![5; 33],
        signature: vec![7; 64],
    }
}

fn account(username: &str, one_time: u32, kyber: u32) -> NewAccount {
    NewAccount {
        user_id: Uuid::new_v4(),
        username: username.to_string(),
        password_hash: "$argon2id$v=19$m=4096,t=1,p=1$c2FsdA$aGFzaA".into(),
        profile: Profile {
            registration_id: 42,
            identity_key: vec![5; 33],
            signed_prekey: signed(1),
            kyber_last_resort: Some(signed(2)),
        },
        one_time: (1..=one_time)
            .map(|key_id| OneTimeKey {
                key_id,
                public_key: vec![5; 33],
            })
            .collect(),
        kyber_one_time: (100..100 + kyber).map(signed).collect(),
    }
}

fn name() -> String {
    format!("user_{:x}", rand::random::<u64>())
}

/// A freshly registered user's id: sessions are only stored for a user that exists.
async fn registered(db: &Dynamo) -> Uuid {
    let a = account(&name(), 1, 0);
    UserStore::create(db, &a).await.unwrap();
    a.user_id
}

/// Once the user is deleted, no session is created or rotated for it: a login or refresh racing
/// an account deletion cannot leave a session behind.
async fn sessions_need_the_user(e: Engine) {
    let db = e.db;
    let user = registered(&db).await;
    let (kept, late) = (Uuid::new_v4(), Uuid::new_v4());
    let exp = unix_secs() + 3600;
    let record = |hash: &str| SessionRecord {
        device_id: 1,
        refresh_hash: hash.into(),
        expires_at: exp,
        previous: None,
    };
    assert!(SessionStore::create(db.as_ref(), user, kept, &record("a"))
        .await
        .unwrap());
    UserStore::delete(db.as_ref(), user).await.unwrap();
    assert!(!SessionStore::create(db.as_ref(), user, late, &record("b"))
        .await
        .unwrap());
    assert_eq!(
        SessionStore::get(db.as_ref(), user, late).await.unwrap(),
        None
    );
    assert_eq!(
        db.rotate(user, kept, "a", &record("c")).await.unwrap(),
        Rotation::UserGone
    );
    assert_eq!(
        SessionStore::get(db.as_ref(), user, kept).await.unwrap(),
        Some(record("a"))
    );
    assert!(
        !SessionStore::create(db.as_ref(), Uuid::new_v4(), late, &record("d"))
            .await
            .unwrap()
    );
}

/// Eight concurrent registrations of one name: one wins, the others get `UsernameTaken` and leave
/// nothing behind (no profile, no one-time keys).
async fn registration_claims_a_name_once(e: Engine) {
    let db = e.db.clone();
    let name = name();
    let accounts: Vec<NewAccount> = (0..8).map(|_| account(&name, 5, 2)).collect();
    let results = e
        .contend(
            accounts
                .iter()
                .map(|a| {
                    let db = db.clone();
                    async move { UserStore::create(db.as_ref(), a).await }
                })
                .collect(),
        )
        .await;
    let winners: Vec<&NewAccount> = accounts
        .iter()
        .zip(&results)
        .filter(|(_, r)| r.is_ok())
        .map(|(a, _)| a)
        .collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    for (a, r) in accounts.iter().zip(&results) {
        if let Err(e) = r {
            assert!(matches!(e, Error::UsernameTaken), "{e:?}");
            assert!(db.profile(a.user_id.into()).await.unwrap().is_none());
            let c = db.counts(a.user_id.into()).await.unwrap();
            assert_eq!((c.one_time_prekeys, c.kyber_one_time_prekeys), (0, 0));
            assert!(!db.exists(a.user_id).await.unwrap());
        }
    }
    let w = winners[0];
    let creds = db.credentials(&name).await.unwrap().expect("credentials");
    assert_eq!(creds.user_id, w.user_id);
    assert_eq!(creds.password_hash, w.password_hash);
    assert_eq!(
        db.profile(w.user_id.into()).await.unwrap(),
        Some(w.profile.clone())
    );
    let c = db.counts(w.user_id.into()).await.unwrap();
    assert_eq!((c.one_time_prekeys, c.kyber_one_time_prekeys), (5, 2));
}

/// `n` bundle fetches of the user's primary device (the only one), each its bundle or the error.
fn fetches(
    db: &Arc<Dynamo>,
    user: Uuid,
    n: usize,
) -> Vec<impl std::future::Future<Output = shared::Result<shared::model::Bundle>>> {
    (0..n)
        .map(|_| {
            let db = db.clone();
            async move {
                let mut bundles = db.take_bundles(user, &[PRIMARY_DEVICE], false).await?;
                assert_eq!(bundles.len(), 1, "one bundle per device asked for");
                Ok(bundles.remove(0))
            }
        })
        .collect()
}

/// The primary device ran out of EC one-time prekeys (and nothing was taken).
fn exhausted(e: &Error) -> bool {
    matches!(e, Error::DevicesExhausted(d) if d == &[PRIMARY_DEVICE])
}

/// 16 concurrent fetches of 10 one-time keys of each kind: 10 bundles with 10 distinct EC keys,
/// 6 exhausted. No Kyber key goes out twice, and none is lost: each was handed out or is still
/// stored (a fetch may fall back to the last-resort key while a losing fetch still holds one it
/// is about to put back).
async fn one_time_keys_are_taken_once(e: Engine) {
    let db = e.db.clone();
    let a = account(&name(), 10, 10);
    UserStore::create(db.as_ref(), &a).await.unwrap();
    let results = e.contend(fetches(&db, a.user_id, 16)).await;
    let mut ec = HashSet::new();
    let mut kyber = HashSet::new();
    let mut n_exhausted = 0;
    for r in results {
        match r {
            Ok(b) => {
                let one_time = b.one_time.expect("an EC one-time key (none was allowed)");
                assert!(ec.insert(one_time.key_id), "EC key handed out twice");
                if let Some(k) = b.kyber_one_time {
                    assert!(kyber.insert(k.key_id), "Kyber key handed out twice");
                }
            }
            Err(e) if exhausted(&e) => n_exhausted += 1,
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!((ec.len(), n_exhausted), (10, 6));
    if !e.linearizable {
        assert_eq!(kyber.len(), 10, "one after another, every fetch gets one");
    }
    let c = db.counts(a.user_id.into()).await.unwrap();
    assert_eq!(c.one_time_prekeys, 0);
    assert_eq!(c.kyber_one_time_prekeys, 10 - kyber.len() as u64);
}

/// One EC key, five Kyber keys, eight concurrent fetches: one bundle; a fetch that lost the EC
/// key puts back the Kyber key it took, so exactly one Kyber key is consumed.
async fn a_failed_fetch_puts_its_kyber_key_back(e: Engine) {
    let db = e.db.clone();
    let a = account(&name(), 1, 5);
    UserStore::create(db.as_ref(), &a).await.unwrap();
    let results = e.contend(fetches(&db, a.user_id, 8)).await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(ok, 1, "{results:?}");
    assert!(results.iter().all(
        |r| r.as_ref().is_ok_and(|b| b.one_time.is_some()) || r.as_ref().is_err_and(exhausted)
    ));
    let c = db.counts(a.user_id.into()).await.unwrap();
    assert_eq!((c.one_time_prekeys, c.kyber_one_time_prekeys), (0, 4));
}

/// Uploads append one-time keys, replace the signed and last-resort keys; counts follow.
async fn uploads_and_counts(e: Engine) {
    let db = e.db;
    let a = account(&name(), 3, 0);
    UserStore::create(db.as_ref(), &a).await.unwrap();
    let upload = KeyUpload {
        signed_prekey: Some(signed(9)),
        kyber_last_resort: Some(signed(10)),
        one_time: (50..90)
            .map(|key_id| OneTimeKey {
                key_id,
                public_key: vec![5; 33],
            })
            .collect(),
        kyber_one_time: (200..207).map(signed).collect(),
    };
    db.store(a.user_id.into(), &upload).await.unwrap();
    let c = db.counts(a.user_id.into()).await.unwrap();
    assert_eq!((c.one_time_prekeys, c.kyber_one_time_prekeys), (43, 7));
    let p = db.profile(a.user_id.into()).await.unwrap().unwrap();
    assert_eq!(p.signed_prekey, signed(9));
    assert_eq!(p.kyber_last_resort, Some(signed(10)));
    let err = db.store(Uuid::new_v4().into(), &upload).await.unwrap_err();
    assert!(matches!(err, Error::UserNotFound), "{err:?}");
}

/// An expired session is not returned, though no TTL sweep removed it (the item is still there),
/// and its refresh hash cannot be rotated; the TTL attribute is the one the table declares.
async fn expired_sessions_are_filtered_when_read(e: Engine) {
    let db = e.db;
    let user = registered(&db).await;
    let (live, expired) = (Uuid::new_v4(), Uuid::new_v4());
    let now = unix_secs();
    let record = |hash: &str, expires_at| SessionRecord {
        device_id: 1,
        refresh_hash: hash.into(),
        expires_at,
        previous: None,
    };
    assert!(
        SessionStore::create(db.as_ref(), user, live, &record("h1", now + 3600))
            .await
            .unwrap()
    );
    assert!(
        SessionStore::create(db.as_ref(), user, expired, &record("h2", now - 10))
            .await
            .unwrap()
    );
    assert_eq!(
        SessionStore::get(db.as_ref(), user, live).await.unwrap(),
        Some(record("h1", now + 3600))
    );
    assert_eq!(
        SessionStore::get(db.as_ref(), user, expired).await.unwrap(),
        None
    );
    assert_eq!(
        db.rotate(user, expired, "h2", &record("h3", now + 3600))
            .await
            .unwrap(),
        Rotation::Stale,
        "an expired session rotated"
    );
    let raw = db
        .client()
        .get_item()
        .table_name(&db.tables().sessions)
        .key("pk", AttributeValue::S(user.to_string()))
        .key("sk", AttributeValue::S(expired.to_string()))
        .consistent_read(true)
        .send()
        .await
        .unwrap();
    let item = raw.item.expect("the expired item is still stored");
    assert_eq!(
        item.get("expires_at").and_then(|v| v.as_n().ok()),
        Some(&(now - 10).to_string())
    );
    let ttl = db
        .client()
        .describe_time_to_live()
        .table_name(&db.tables().sessions)
        .send()
        .await
        .unwrap();
    assert_eq!(
        ttl.time_to_live_description
            .and_then(|d| d.attribute_name)
            .as_deref(),
        Some("expires_at")
    );
}

/// Rotation is conditional on the current hash; deleting all returns every session id.
async fn sessions_rotate_conditionally_and_delete_all(e: Engine) {
    let db = e.db.clone();
    let user = registered(&db).await;
    let ids: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
    let exp = unix_secs() + 3600;
    for id in &ids {
        let r = SessionRecord {
            device_id: 1,
            refresh_hash: "old".into(),
            expires_at: exp,
            previous: None,
        };
        assert!(SessionStore::create(db.as_ref(), user, *id, &r)
            .await
            .unwrap());
    }
    let next = SessionRecord {
        device_id: 1,
        refresh_hash: "new".into(),
        expires_at: exp + 1,
        previous: Some(PreviousRefresh {
            hash: "old".into(),
            until: exp - 3590,
            sealed_next: "ab".repeat(32),
        }),
    };
    assert_eq!(
        db.rotate(user, ids[0], "wrong", &next).await.unwrap(),
        Rotation::Stale
    );
    // Two concurrent rotations from the same hash: exactly one wins.
    let won = e
        .contend(vec![
            db.rotate(user, ids[0], "old", &next),
            db.rotate(user, ids[0], "old", &next),
        ])
        .await;
    assert_eq!(
        won.into_iter()
            .filter(|w| *w.as_ref().unwrap() == Rotation::Rotated)
            .count(),
        1
    );
    assert_eq!(
        SessionStore::get(db.as_ref(), user, ids[0]).await.unwrap(),
        Some(next)
    );
    let mut deleted = db.delete_all(user).await.unwrap();
    deleted.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(deleted, expected);
    for id in ids {
        assert_eq!(
            SessionStore::get(db.as_ref(), user, id).await.unwrap(),
            None
        );
    }
}

/// Deleting a user removes the name, the profile and every key.
async fn deleting_a_user_removes_everything(e: Engine) {
    let db = e.db;
    let name = name();
    let a = account(&name, 30, 4);
    UserStore::create(db.as_ref(), &a).await.unwrap();
    UserStore::delete(db.as_ref(), a.user_id).await.unwrap();
    assert!(db.credentials(&name).await.unwrap().is_none());
    assert!(!db.exists(a.user_id).await.unwrap());
    assert!(db.profile(a.user_id.into()).await.unwrap().is_none());
    let c = db.counts(a.user_id.into()).await.unwrap();
    assert_eq!((c.one_time_prekeys, c.kyber_one_time_prekeys), (0, 0));
    // The name is free again.
    UserStore::create(db.as_ref(), &account(&name, 1, 0))
        .await
        .unwrap();
}

fn new_device(registration_id: u32, one_time: u32) -> NewDevice {
    let a = account("unused", one_time, 0);
    NewDevice {
        profile: Profile {
            registration_id,
            ..a.profile
        },
        one_time: a.one_time,
        kyber_one_time: vec![],
    }
}

/// Devices: the smallest free id, the cap, concurrent links never sharing an id or passing the
/// cap, removal of the device's keys (and its id free again), sessions only for a listed device,
/// and deletion of the account removing every device's keys.
async fn devices_link_and_go_under_the_cap(e: Engine) {
    let db = e.db.clone();
    let user = registered(&db).await;
    let list = db.devices(user).await.unwrap().unwrap();
    assert_eq!(
        (list.version, list.devices.len(), list.devices[0].device_id),
        (1, 1, 1)
    );
    assert_eq!(list.devices[0].registration_id, 42);
    assert_eq!(db.devices(Uuid::new_v4()).await.unwrap(), None);

    let adds = (0..6)
        .map(|i| {
            let db = db.clone();
            async move { db.add_device(user, &new_device(100 + i, 3), 4).await }
        })
        .collect();
    let outcomes = e.contend(adds).await;
    let ids: BTreeSet<u32> = outcomes
        .iter()
        .filter_map(|o| o.as_ref().ok().map(|(id, _)| *id))
        .collect();
    assert_eq!(ids, BTreeSet::from([2, 3, 4]), "{outcomes:?}");
    for o in &outcomes {
        match o {
            Ok(_) => {}
            Err(Error::TooManyDevices) | Err(Error::Unavailable(_)) => {}
            Err(other) => panic!("{other:?}"),
        }
    }
    let list = db.devices(user).await.unwrap().unwrap();
    assert_eq!(list.devices.len(), 4);
    let three = DeviceAddress::new(user, 3);
    assert_eq!(db.counts(three).await.unwrap().one_time_prekeys, 3);

    // A session of a linked device needs the device listed.
    let record = SessionRecord {
        device_id: 3,
        refresh_hash: "h".into(),
        expires_at: unix_secs() + 3600,
        previous: None,
    };
    assert!(
        SessionStore::create(db.as_ref(), user, Uuid::new_v4(), &record)
            .await
            .unwrap()
    );
    let left = db.remove_device(user, 3).await.unwrap();
    assert_eq!(left.version, list.version + 1);
    assert!(left.get(3).is_none());
    assert!(db.profile(three).await.unwrap().is_none());
    assert_eq!(db.counts(three).await.unwrap().one_time_prekeys, 0);
    assert!(
        !SessionStore::create(db.as_ref(), user, Uuid::new_v4(), &record)
            .await
            .unwrap()
    );
    assert_eq!(
        SessionStore::delete_device(db.as_ref(), user, 3)
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(matches!(
        db.remove_device(user, 3).await,
        Err(Error::DeviceNotFound)
    ));
    assert!(matches!(
        db.remove_device(user, 1).await,
        Err(Error::DeviceNotFound)
    ));
    // The freed id is the next one taken, with the new device's registration id.
    let (id, list) = db.add_device(user, &new_device(777, 1), 4).await.unwrap();
    assert_eq!((id, list.get(3).map(|d| d.registration_id)), (3, Some(777)));

    // A bundle of every device takes one key of each, or none when one device has none left.
    let all: Vec<u32> = list.devices.iter().map(|d| d.device_id).collect();
    let bundles = db.take_bundles(user, &all, false).await.unwrap();
    assert_eq!(bundles.len(), 4);
    match db.take_bundles(user, &all, false).await {
        Err(Error::DevicesExhausted(ids)) => assert_eq!(ids, vec![1, 3]),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        db.counts(DeviceAddress::new(user, 2))
            .await
            .unwrap()
            .one_time_prekeys,
        2
    );

    UserStore::delete(db.as_ref(), user).await.unwrap();
    for d in all {
        assert!(db
            .profile(DeviceAddress::new(user, d))
            .await
            .unwrap()
            .is_none());
    }
}

/// An account from before devices (a user item without `devices`) has device 1 only, with the
/// registration id of its key profile; its first link writes the whole list.
async fn accounts_from_before_devices_get_a_list(e: Engine) {
    let db = e.db;
    let user = registered(&db).await;
    db.client()
        .update_item()
        .table_name(&db.tables().users)
        .key("pk", AttributeValue::S(format!("user#{user}")))
        .update_expression("REMOVE devices, devices_version")
        .send()
        .await
        .unwrap();
    let list = db.devices(user).await.unwrap().unwrap();
    assert_eq!(list.version, 1);
    assert_eq!(
        list.devices
            .iter()
            .map(|d| (d.device_id, d.registration_id))
            .collect::<Vec<_>>(),
        vec![(1, 42)]
    );
    let (id, list) = db.add_device(user, &new_device(9, 1), 6).await.unwrap();
    assert_eq!((id, list.version, list.devices.len()), (2, 2, 2));
    assert_eq!(db.devices(user).await.unwrap().unwrap(), list);
}

/// A removal retires the device's registration id under its device id (the newest
/// `RETIRED_REGISTRATIONS_KEPT`), and a link that would repeat one there is refused; a user
/// item from before they were kept has none.
async fn relinks_may_not_repeat_a_retired_registration_id(e: Engine) {
    let db = e.db;
    let user = registered(&db).await;
    let (_, retired) = db.device_history(user).await.unwrap().unwrap();
    assert_eq!(retired, RetiredRegistrations::default());
    assert_eq!(db.device_history(Uuid::new_v4()).await.unwrap(), None);

    assert_eq!(
        db.add_device(user, &new_device(200, 1), 6).await.unwrap().0,
        2
    );
    let left = db.remove_device(user, 2).await.unwrap();
    assert!(matches!(
        db.add_device(user, &new_device(200, 1), 6).await,
        Err(Error::RegistrationIdReused)
    ));
    assert_eq!(
        db.devices(user).await.unwrap().unwrap(),
        left,
        "nothing written"
    );
    for generation in 1..=RETIRED_REGISTRATIONS_KEPT as u32 {
        let (id, _) = db
            .add_device(user, &new_device(200 + generation, 1), 6)
            .await
            .unwrap();
        assert_eq!(id, 2);
        db.remove_device(user, 2).await.unwrap();
    }
    let (list, retired) = db.device_history(user).await.unwrap().unwrap();
    assert_eq!(list.devices.len(), 1);
    let kept: Vec<u32> = (1..=RETIRED_REGISTRATIONS_KEPT as u32)
        .map(|g| 200 + g)
        .collect();
    assert_eq!(retired.0.get(&2), Some(&kept), "the newest, oldest first");
    for &r in &kept {
        assert!(matches!(
            db.add_device(user, &new_device(r, 1), 6).await,
            Err(Error::RegistrationIdReused)
        ));
    }
    // The oldest beyond the bound is forgotten; device id 3 never had any of them.
    assert_eq!(
        db.add_device(user, &new_device(200, 1), 6).await.unwrap().0,
        2
    );
    assert_eq!(
        db.add_device(user, &new_device(kept[0], 1), 6)
            .await
            .unwrap()
            .0,
        3
    );
}

fn roster_entry(role: Role, state: MemberState, since: u64) -> Member {
    Member {
        user_id: Uuid::new_v4(),
        role,
        state,
        since,
        mls_devices: vec![],
    }
}

/// A new group of an admin and `invited` invitees, at version 1.
fn new_group(invited: usize) -> Group {
    let mut members = vec![roster_entry(Role::Admin, MemberState::Member, 1)];
    members.extend((0..invited).map(|_| roster_entry(Role::Member, MemberState::Invited, 1)));
    Group {
        id: Uuid::new_v4(),
        version: 1,
        meta: Some("bWV0YQ==".into()),
        created_at: 1,
        members,
        protocol: Protocol::Signal,
        mls: None,
    }
}

fn entry_of(g: &Group, i: usize) -> Membership {
    Membership {
        group_id: g.id,
        role: g.members[i].role,
        state: g.members[i].state,
    }
}

/// Every change is conditional on the version it was made from; the index follows the roster.
async fn groups_change_at_their_version(e: Engine) {
    let db: Arc<dyn GroupStore> = e.db;
    let g = new_group(2);
    let (admin, b, c) = (
        g.members[0].user_id,
        g.members[1].user_id,
        g.members[2].user_id,
    );
    db.create(&g).await.unwrap();
    assert_eq!(
        GroupStore::get(db.as_ref(), g.id).await.unwrap(),
        Some(g.clone())
    );
    assert_eq!(
        db.of_user(b, None, 10).await.unwrap(),
        vec![entry_of(&g, 1)]
    );

    // b joins, c is dropped: one transaction.
    let mut next = g.clone();
    next.version = 2;
    next.members[1].state = MemberState::Member;
    next.members.remove(2);
    assert_eq!(
        db.replace(&next, 1, &[b], &[c]).await.unwrap(),
        GroupWrite::Written
    );
    assert_eq!(
        db.of_user(b, None, 10).await.unwrap(),
        vec![entry_of(&next, 1)]
    );
    assert!(db.of_user(c, None, 10).await.unwrap().is_empty());

    // A change made from version 1 again finds version 2 and writes nothing.
    let mut stale = g.clone();
    stale.version = 2;
    stale.meta = None;
    assert_eq!(
        db.replace(&stale, 1, &[], &[]).await.unwrap(),
        GroupWrite::Moved(Some(next.clone()))
    );
    assert_eq!(db.of_user(c, None, 10).await.unwrap(), vec![]);
    assert_eq!(
        db.delete(g.id, 1, &[admin, b]).await.unwrap(),
        GroupWrite::Moved(Some(next.clone()))
    );

    assert_eq!(
        db.delete(g.id, 2, &[admin, b]).await.unwrap(),
        GroupWrite::Written
    );
    assert_eq!(GroupStore::get(db.as_ref(), g.id).await.unwrap(), None);
    assert!(db.of_user(admin, None, 10).await.unwrap().is_empty());
    assert!(db.of_user(b, None, 10).await.unwrap().is_empty());
    let mut late = next.clone();
    late.version = 3;
    assert_eq!(
        db.replace(&late, 2, &[], &[]).await.unwrap(),
        GroupWrite::Moved(None)
    );
    assert_eq!(GroupStore::get(db.as_ref(), g.id).await.unwrap(), None);
}

/// Of concurrent changes made from one version, exactly one is written.
async fn concurrent_group_changes_at_one_version_write_one(e: Engine) {
    let db: Arc<dyn GroupStore> = e.db.clone();
    let g = new_group(0);
    db.create(&g).await.unwrap();
    let changes: Vec<Group> = (0..10)
        .map(|_| {
            let mut next = g.clone();
            next.version = 2;
            next.members
                .push(roster_entry(Role::Member, MemberState::Invited, 2));
            next
        })
        .collect();
    let results = e
        .contend(
            changes
                .iter()
                .map(|next| {
                    db.replace(next, 1, std::slice::from_ref(&next.members[1].user_id), &[])
                })
                .collect(),
        )
        .await;
    let won: Vec<usize> = (0..results.len())
        .filter(|i| results[*i].as_ref().unwrap() == &GroupWrite::Written)
        .collect();
    assert_eq!(won.len(), 1, "{results:?}");
    let stored = GroupStore::get(db.as_ref(), g.id).await.unwrap().unwrap();
    assert_eq!(stored, changes[won[0]]);
    for (i, (r, next)) in results.iter().zip(&changes).enumerate() {
        let listed = db.of_user(next.members[1].user_id, None, 10).await.unwrap();
        if i == won[0] {
            assert_eq!(listed.len(), 1);
        } else {
            assert_eq!(
                r.as_ref().unwrap(),
                &GroupWrite::Moved(Some(stored.clone()))
            );
            assert!(listed.is_empty(), "a losing change left an index entry");
        }
    }
}

/// A user's groups page by group id.
async fn a_users_groups_page_by_id(e: Engine) {
    let db: Arc<dyn GroupStore> = e.db;
    let user = Uuid::new_v4();
    let mut ids = BTreeSet::new();
    for _ in 0..5 {
        let mut g = new_group(0);
        g.members[0].user_id = user;
        db.create(&g).await.unwrap();
        ids.insert(g.id);
    }
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = db.of_user(user, after, 2).await.unwrap();
        assert!(page.len() <= 2);
        let Some(last) = page.last() else { break };
        after = Some(last.group_id);
        seen.extend(page.iter().map(|m| m.group_id));
    }
    assert_eq!(seen, ids.into_iter().collect::<Vec<_>>());
}

/// A group deleted with more index entries than one transaction holds loses all of them.
async fn deleting_a_large_group_drops_every_index_entry(e: Engine) {
    let db: Arc<dyn GroupStore> = e.db;
    let mut g = new_group(98);
    db.create(&g).await.unwrap();
    let more: Vec<Member> = (0..40)
        .map(|_| roster_entry(Role::Member, MemberState::Invited, 2))
        .collect();
    g.members.extend(more.iter().cloned());
    g.version = 2;
    let added: Vec<Uuid> = more.iter().map(|m| m.user_id).collect();
    assert_eq!(
        db.replace(&g, 1, &added, &[]).await.unwrap(),
        GroupWrite::Written
    );
    let everyone: Vec<Uuid> = g.members.iter().map(|m| m.user_id).collect();
    assert_eq!(everyone.len(), 139);
    assert_eq!(
        db.delete(g.id, 2, &everyone).await.unwrap(),
        GroupWrite::Written
    );
    for user in [everyone[0], everyone[98], everyone[99], everyone[138]] {
        assert!(db.of_user(user, None, 10).await.unwrap().is_empty());
    }
}

/// The largest roster `GROUP_MAX_MEMBERS` allows is one item, written and read back whole.
async fn the_largest_roster_fits_one_item(e: Engine) {
    let db: Arc<dyn GroupStore> = e.db;
    let mut g = new_group(0);
    db.create(&g).await.unwrap();
    // Admins and members, joined and invited, with 13-digit times: the longest entries there are.
    g.members
        .extend((1..GroupLimits::LARGEST_ROSTER as u64).map(|i| {
            let role = if i % 2 == 0 {
                Role::Admin
            } else {
                Role::Member
            };
            let state = if i % 3 == 0 {
                MemberState::Member
            } else {
                MemberState::Invited
            };
            roster_entry(role, state, 1_796_000_000_000 + i)
        }));
    g.version = 2;
    assert_eq!(
        db.replace(&g, 1, &[], &[]).await.unwrap(),
        GroupWrite::Written
    );
    assert_eq!(GroupStore::get(db.as_ref(), g.id).await.unwrap(), Some(g));
}

/// A new MLS group of two joined members (not initialised yet), at version 1.
fn new_mls_group() -> Group {
    let mut g = new_group(0);
    g.protocol = Protocol::Mls;
    g.members
        .push(roster_entry(Role::Member, MemberState::Member, 1));
    g
}

/// Blobs whose every byte says which writer and epoch they are of.
fn blobs(state_len: usize, tag: u8) -> MlsBlobs {
    MlsBlobs {
        state: (0..state_len).map(|i| (i % 251) as u8 ^ tag).collect(),
        group_info: vec![tag; 1_000],
        log: None,
    }
}

/// `g` moved to `epoch` of generation 1 with these blobs, its members' devices in the tree.
fn at_epoch(g: &Group, epoch: u64, blobs: &MlsBlobs) -> Group {
    let mut next = g.clone();
    next.version += 1;
    next.mls = Some(blobs.at(epoch, 1));
    for m in &mut next.members {
        m.mls_devices = vec![1, 2];
    }
    next
}

/// The sort keys of the items in the group's partition besides the group item.
async fn chunk_keys(e: &Engine, g: &Group) -> Vec<String> {
    let out =
        e.db.client()
            .query()
            .table_name(&e.db.tables().groups)
            .key_condition_expression("pk = :pk AND begins_with(sk, :p)")
            .expression_attribute_values(":pk", AttributeValue::S(format!("group#{}", g.id)))
            .expression_attribute_values(":p", AttributeValue::S("mls#".into()))
            .consistent_read(true)
            .send()
            .await
            .unwrap();
    out.items()
        .iter()
        .map(|i| i["sk"].as_s().unwrap().clone())
        .collect()
}

/// An MLS change writes the roster, the index and the state's chunks in one transaction, deletes
/// the chunks of the epoch it replaces, and the group's deletion takes the last ones with it.
async fn mls_state_is_written_in_chunks_with_the_roster(e: Engine) {
    let db: Arc<dyn GroupStore> = e.db.clone();
    let g = new_mls_group();
    db.create(&g).await.unwrap();
    assert_eq!(
        GroupStore::get(db.as_ref(), g.id).await.unwrap(),
        Some(g.clone())
    );

    // 900,000 bytes: 3 chunks of at most 350,000.
    let first = blobs(900_000, 1);
    let mut e1 = at_epoch(&g, 1, &first);
    let invitee = roster_entry(Role::Member, MemberState::Invited, 2);
    e1.members.push(invitee.clone());
    assert_eq!(e1.mls.as_ref().unwrap().state_chunks, 3);
    assert_eq!(
        db.replace_mls(&e1, 1, &[invitee.user_id], &[], &first, None)
            .await
            .unwrap(),
        GroupWrite::Written
    );
    assert_eq!(
        GroupStore::get(db.as_ref(), g.id).await.unwrap(),
        Some(e1.clone())
    );
    assert_eq!(
        db.of_user(invitee.user_id, None, 10).await.unwrap().len(),
        1
    );
    let epoch1 = e1.mls.clone().unwrap();
    assert_eq!(
        db.mls_blobs(g.id, &epoch1).await.unwrap(),
        Some(first.clone())
    );
    assert_eq!(
        chunk_keys(&e, &g).await,
        ["mls#1#1#i0", "mls#1#1#s0", "mls#1#1#s1", "mls#1#1#s2"]
    );

    // The next epoch, smaller: the previous epoch's chunks go in the same transaction.
    let second = blobs(10, 2);
    let mut e2 = at_epoch(&e1, 2, &second);
    e2.members.pop();
    assert_eq!(
        db.replace_mls(&e2, 2, &[], &[invitee.user_id], &second, Some(&epoch1))
            .await
            .unwrap(),
        GroupWrite::Written
    );
    assert_eq!(
        GroupStore::get(db.as_ref(), g.id).await.unwrap(),
        Some(e2.clone())
    );
    assert!(db
        .of_user(invitee.user_id, None, 10)
        .await
        .unwrap()
        .is_empty());
    let epoch2 = e2.mls.clone().unwrap();
    assert_eq!(db.mls_blobs(g.id, &epoch1).await.unwrap(), None);
    assert_eq!(
        db.mls_blobs(g.id, &epoch2).await.unwrap(),
        Some(second.clone())
    );
    assert_eq!(chunk_keys(&e, &g).await, ["mls#1#2#i0", "mls#1#2#s0"]);

    // Refused before anything is sent: chunk counts that are not the blobs', no epoch at all,
    // more writes or bytes than one transaction holds.
    let mut e3 = at_epoch(&e2, 3, &first);
    let wrong = e3.clone();
    assert!(matches!(
        db.replace_mls(&wrong, 3, &[], &[], &second, Some(&epoch2))
            .await,
        Err(Error::Internal(_))
    ));
    let mut no_epoch = e3.clone();
    no_epoch.mls = None;
    assert!(matches!(
        db.replace_mls(&no_epoch, 3, &[], &[], &first, Some(&epoch2))
            .await,
        Err(Error::Internal(_))
    ));
    let crowd: Vec<Member> = (0..94)
        .map(|_| roster_entry(Role::Member, MemberState::Invited, 3))
        .collect();
    e3.members.extend(crowd.iter().cloned());
    let added: Vec<Uuid> = crowd.iter().map(|m| m.user_id).collect();
    let err = db
        .replace_mls(&e3, 3, &added, &[], &first, Some(&epoch2))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Internal(m) if m.contains("one transaction")),
        "{err:?}"
    );
    let huge = blobs(3_700_000, 4);
    let err = db
        .replace_mls(&at_epoch(&e2, 3, &huge), 3, &[], &[], &huge, Some(&epoch2))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Internal(m) if m.contains("one transaction")),
        "{err:?}"
    );
    assert_eq!(
        GroupStore::get(db.as_ref(), g.id).await.unwrap(),
        Some(e2.clone())
    );

    // A reset starts a new generation: its epoch 1 does not meet the old generation's chunks.
    let reset = blobs(400_000, 3);
    let mut g2 = e2.clone();
    g2.version = 4;
    g2.mls = Some(reset.at(1, 2));
    assert_eq!(
        db.replace_mls(&g2, 3, &[], &[], &reset, Some(&epoch2))
            .await
            .unwrap(),
        GroupWrite::Written
    );
    assert_eq!(
        chunk_keys(&e, &g).await,
        ["mls#2#1#i0", "mls#2#1#s0", "mls#2#1#s1"]
    );

    let everyone: Vec<Uuid> = g2.user_ids();
    assert_eq!(
        db.delete(g.id, 4, &everyone).await.unwrap(),
        GroupWrite::Written
    );
    assert!(chunk_keys(&e, &g).await.is_empty());
    assert_eq!(
        db.mls_blobs(g.id, g2.mls.as_ref().unwrap()).await.unwrap(),
        None
    );
}

/// Of concurrent MLS changes made from one version, exactly one is written, chunks included.
async fn concurrent_mls_changes_at_one_version_write_one(e: Engine) {
    let db: Arc<dyn GroupStore> = e.db.clone();
    let g = new_mls_group();
    db.create(&g).await.unwrap();
    let start = blobs(1_000, 0);
    let e1 = at_epoch(&g, 1, &start);
    assert_eq!(
        db.replace_mls(&e1, 1, &[], &[], &start, None)
            .await
            .unwrap(),
        GroupWrite::Written
    );
    let epoch1 = e1.mls.clone().unwrap();
    // Eight committers of epoch 2, each with its own bytes under the same chunk keys.
    let writers: Vec<(Group, MlsBlobs)> = (1..=8u8)
        .map(|tag| {
            let b = blobs(900_000, tag);
            (at_epoch(&e1, 2, &b), b)
        })
        .collect();
    let results = e
        .contend(
            writers
                .iter()
                .map(|(next, b)| db.replace_mls(next, 2, &[], &[], b, Some(&epoch1)))
                .collect(),
        )
        .await;
    let won: Vec<usize> = (0..results.len())
        .filter(|i| results[*i].as_ref().unwrap() == &GroupWrite::Written)
        .collect();
    assert_eq!(won.len(), 1, "{results:?}");
    let (winner, winner_blobs) = &writers[won[0]];
    let stored = GroupStore::get(db.as_ref(), g.id).await.unwrap().unwrap();
    assert_eq!(&stored, winner);
    for (i, r) in results.iter().enumerate() {
        if i != won[0] {
            assert_eq!(
                r.as_ref().unwrap(),
                &GroupWrite::Moved(Some(stored.clone()))
            );
        }
    }
    // The losers' chunks were not written: the winner's bytes read back exactly.
    assert_eq!(
        db.mls_blobs(g.id, stored.mls.as_ref().unwrap())
            .await
            .unwrap()
            .as_ref(),
        Some(winner_blobs)
    );
    assert_eq!(db.mls_blobs(g.id, &epoch1).await.unwrap(), None);
}

fn key_package(tag: &str) -> KeyPackageItem {
    KeyPackageItem {
        reference: format!("{tag}{:016x}", rand::random::<u64>()),
        bytes: tag.as_bytes().to_vec(),
    }
}

/// KeyPackages are counted without the last-resort one, claimed one per device and recorded
/// for the Welcome that names them.
async fn key_packages_are_counted_claimed_and_recorded(e: Engine) {
    let db = e.db.clone();
    let user = Uuid::new_v4();
    let (one, two) = (DeviceAddress::new(user, 1), DeviceAddress::new(user, 2));
    let by = DeviceAddress::new(Uuid::new_v4(), 3);
    assert_eq!(db.key_package_count(one).await.unwrap(), (0, false));
    let packages: Vec<KeyPackageItem> = (0..3).map(|_| key_package("a")).collect();
    db.put_key_packages(one, &packages, None).await.unwrap();
    assert_eq!(db.key_package_count(one).await.unwrap(), (3, false));
    // The same reference again overwrites; a last-resort one is not counted.
    let last = key_package("last");
    db.put_key_packages(one, &packages[..1], Some(&last))
        .await
        .unwrap();
    assert_eq!(db.key_package_count(one).await.unwrap(), (3, true));
    let last_two = key_package("other-last");
    db.put_key_packages(two, &[], Some(&last_two))
        .await
        .unwrap();
    assert_eq!(db.key_package_count(two).await.unwrap(), (0, true));

    let claimed = db.claim_key_packages(user, &[1, 2], by).await.unwrap();
    assert_eq!(claimed.len(), 2);
    assert_eq!(claimed[0].device_id, 1);
    assert!(!claimed[0].last_resort);
    assert!(packages
        .iter()
        .any(|p| p.reference == claimed[0].reference && p.bytes == claimed[0].bytes));
    assert_eq!((claimed[1].device_id, claimed[1].last_resort), (2, true));
    assert_eq!(claimed[1].reference, last_two.reference);
    assert_eq!(claimed[1].bytes, last_two.bytes);
    assert_eq!(db.key_package_count(one).await.unwrap(), (2, true));
    // The last-resort one stays.
    assert_eq!(db.key_package_count(two).await.unwrap(), (0, true));

    let unknown = "00ff".to_string();
    let asked = vec![
        claimed[1].reference.clone(),
        unknown.clone(),
        claimed[0].reference.clone(),
        claimed[1].reference.clone(),
    ];
    assert_eq!(
        db.handed_out(&asked).await.unwrap(),
        vec![Some(two), None, Some(one), Some(two)]
    );
    // A KeyPackage still stored was never handed out.
    let stored = packages
        .iter()
        .find(|p| p.reference != claimed[0].reference)
        .unwrap();
    assert_eq!(
        db.handed_out(std::slice::from_ref(&stored.reference))
            .await
            .unwrap(),
        vec![None]
    );
    // The records expire with the handout period.
    let clock = shared::clock::ManualClock::new();
    let later = (*db).clone().with_clock(clock.clone());
    clock.advance(std::time::Duration::from_secs(
        KEY_PACKAGE_HANDOUT_SECS - 60,
    ));
    assert_eq!(
        later.handed_out(&asked[..1]).await.unwrap(),
        vec![Some(two)]
    );
    clock.advance(std::time::Duration::from_secs(120));
    assert_eq!(later.handed_out(&asked[..1]).await.unwrap(), vec![None]);
}

/// Concurrent claims never get the same KeyPackage: once they are gone, the last-resort one.
async fn concurrent_key_package_claims_take_each_once(e: Engine) {
    let db = e.db.clone();
    let user = Uuid::new_v4();
    let device = DeviceAddress::new(user, 1);
    let packages: Vec<KeyPackageItem> = (0..5).map(|_| key_package("c")).collect();
    let last = key_package("last");
    db.put_key_packages(device, &packages, Some(&last))
        .await
        .unwrap();
    let by = DeviceAddress::new(Uuid::new_v4(), 1);
    let results = e
        .contend(
            (0..20)
                .map(|_| db.claim_key_packages(user, &[1], by))
                .collect(),
        )
        .await;
    let claimed: Vec<_> = results
        .into_iter()
        .map(|r| r.unwrap().pop().unwrap())
        .collect();
    let taken: HashSet<String> = claimed
        .iter()
        .filter(|c| !c.last_resort)
        .map(|c| c.reference.clone())
        .collect();
    assert_eq!(claimed.iter().filter(|c| !c.last_resort).count(), 5);
    assert_eq!(
        taken,
        packages.iter().map(|p| p.reference.clone()).collect()
    );
    let again: Vec<_> = claimed.iter().filter(|c| c.last_resort).collect();
    assert_eq!(again.len(), 15);
    assert!(again.iter().all(|c| c.reference == last.reference));
    assert_eq!(db.key_package_count(device).await.unwrap(), (0, true));
}

/// A device with neither a KeyPackage nor a last-resort one fails the claim, and the other
/// devices' KeyPackages stay where they were.
async fn exhausted_key_packages_take_nothing(e: Engine) {
    let db = e.db.clone();
    let user = Uuid::new_v4();
    let has = DeviceAddress::new(user, 1);
    let packages = [key_package("x")];
    db.put_key_packages(has, &packages, None).await.unwrap();
    let by = DeviceAddress::new(Uuid::new_v4(), 1);
    let err = db
        .claim_key_packages(user, &[1, 2, 4], by)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::KeyPackagesExhausted(d) if d == &[2, 4]),
        "{err:?}"
    );
    assert_eq!(db.key_package_count(has).await.unwrap(), (1, false));
    assert_eq!(
        db.handed_out(std::slice::from_ref(&packages[0].reference))
            .await
            .unwrap(),
        vec![None]
    );
    // Device 1 alone still gets it.
    let claimed = db.claim_key_packages(user, &[1], by).await.unwrap();
    assert_eq!(claimed[0].reference, packages[0].reference);
}

/// A removed device's KeyPackages go with its keys, and the account's with the account.
async fn key_packages_go_with_the_device_and_the_account(e: Engine) {
    let db = e.db;
    let a = account(&name(), 1, 0);
    UserStore::create(db.as_ref(), &a).await.unwrap();
    let (linked, _) = db
        .add_device(a.user_id, &new_device(77, 1), 4)
        .await
        .unwrap();
    let primary = DeviceAddress::primary(a.user_id);
    let second = DeviceAddress::new(a.user_id, linked);
    for device in [primary, second] {
        db.put_key_packages(
            device,
            &[key_package("d"), key_package("d")],
            Some(&key_package("l")),
        )
        .await
        .unwrap();
        assert_eq!(db.key_package_count(device).await.unwrap(), (2, true));
    }
    db.remove_device(a.user_id, linked).await.unwrap();
    assert_eq!(db.key_package_count(second).await.unwrap(), (0, false));
    assert_eq!(db.key_package_count(primary).await.unwrap(), (2, true));
    UserStore::delete(db.as_ref(), a.user_id).await.unwrap();
    assert_eq!(db.key_package_count(primary).await.unwrap(), (0, false));
}

/// Six accounts renamed to one free name at once: exactly one gets it (with its credentials,
/// so it logs in by it), the others get `UsernameTaken` and keep their names; the winner's old
/// name is free for anyone at once.
async fn renames_claim_a_name_once(e: Engine) {
    let db = e.db.clone();
    let accounts: Vec<NewAccount> = (0..6).map(|_| account(&name(), 1, 0)).collect();
    for a in &accounts {
        UserStore::create(db.as_ref(), a).await.unwrap();
    }
    let wanted = name();
    let results = e
        .contend(
            accounts
                .iter()
                .map(|a| {
                    let (db, wanted) = (db.clone(), wanted.clone());
                    async move { UserStore::rename(db.as_ref(), a.user_id, &wanted).await }
                })
                .collect(),
        )
        .await;
    let winners: Vec<&NewAccount> = accounts
        .iter()
        .zip(&results)
        .filter(|(_, r)| r.is_ok())
        .map(|(a, _)| a)
        .collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    let w = winners[0];
    for (a, r) in accounts.iter().zip(&results) {
        if let Err(e) = r {
            assert!(matches!(e, Error::UsernameTaken), "{e:?}");
            let kept = db.credentials(&a.username).await.unwrap().expect("kept");
            assert_eq!(kept.user_id, a.user_id);
            let (username, _) = db.account(a.user_id).await.unwrap().unwrap();
            assert_eq!(username, a.username);
        }
    }
    let creds = db
        .credentials(&wanted)
        .await
        .unwrap()
        .expect("the new claim");
    assert_eq!(
        (creds.user_id, &creds.password_hash),
        (w.user_id, &w.password_hash)
    );
    assert_eq!(creds.username, wanted);
    assert!(db.credentials(&w.username).await.unwrap().is_none());
    let (username, created_at) = db.account(w.user_id).await.unwrap().unwrap();
    assert_eq!(username, wanted);
    assert!(created_at > 0);
    let found = db
        .find_by_name(&wanted)
        .await
        .unwrap()
        .expect("found by the new name");
    assert_eq!(found.user_id, w.user_id);
    // The old name is free: another account registers it.
    UserStore::create(db.as_ref(), &account(&w.username, 1, 0))
        .await
        .unwrap();
    // A taken name, the same name, a missing account.
    let other = &accounts.iter().find(|a| a.user_id != w.user_id).unwrap();
    assert!(matches!(
        UserStore::rename(db.as_ref(), other.user_id, &wanted).await,
        Err(Error::UsernameTaken)
    ));
    UserStore::rename(db.as_ref(), w.user_id, &wanted)
        .await
        .unwrap();
    assert!(matches!(
        UserStore::rename(db.as_ref(), Uuid::new_v4(), &name()).await,
        Err(Error::UserNotFound)
    ));
    // Deleting the renamed account frees the new name.
    UserStore::delete(db.as_ref(), w.user_id).await.unwrap();
    assert!(db.credentials(&wanted).await.unwrap().is_none());
}

/// A rename racing the account's deletion leaves no claim behind: whichever commits first,
/// neither the old nor the new name is held once both are done.
async fn a_rename_racing_a_deletion_leaves_no_claim(e: Engine) {
    let db = e.db.clone();
    for _ in 0..4 {
        let a = account(&name(), 1, 0);
        UserStore::create(db.as_ref(), &a).await.unwrap();
        let wanted = name();
        let rename = {
            let (db, wanted) = (db.clone(), wanted.clone());
            let user = a.user_id;
            async move {
                // Either order is fine; a rename after the deletion finds no account.
                match UserStore::rename(db.as_ref(), user, &wanted).await {
                    Ok(()) | Err(Error::UserNotFound) => Ok(()),
                    Err(e) => Err(e),
                }
            }
        };
        let delete = {
            let db = db.clone();
            let user = a.user_id;
            async move { UserStore::delete(db.as_ref(), user).await }
        };
        let results = e.contend(vec![rename.boxed(), delete.boxed()]).await;
        for r in results {
            r.unwrap();
        }
        assert!(!db.exists(a.user_id).await.unwrap());
        assert!(db.credentials(&a.username).await.unwrap().is_none());
        assert!(db.credentials(&wanted).await.unwrap().is_none());
    }
}

/// The sessions of a user as an export lists them: unexpired ones only, with when they started
/// and were last rotated, at most `max`.
async fn sessions_are_listed_without_secrets(e: Engine) {
    let db = e.db;
    let user = registered(&db).await;
    let now = unix_secs();
    let record = |hash: &str, expires_at| SessionRecord {
        device_id: 1,
        refresh_hash: hash.into(),
        expires_at,
        previous: None,
    };
    let (a, b, gone) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    for (id, r) in [
        (a, record("a", now + 3600)),
        (b, record("b", now + 3600)),
        (gone, record("c", now - 1)),
    ] {
        assert!(SessionStore::create(db.as_ref(), user, id, &r)
            .await
            .unwrap());
    }
    assert_eq!(
        db.rotate(user, b, "b", &record("b2", now + 7200))
            .await
            .unwrap(),
        Rotation::Rotated
    );
    let (listed, more) = SessionStore::list(db.as_ref(), user, 10).await.unwrap();
    assert!(!more);
    let mut expected = vec![a, b];
    expected.sort();
    assert_eq!(
        listed.iter().map(|s| s.session_id).collect::<Vec<_>>(),
        expected
    );
    for s in &listed {
        assert_eq!(s.device_id, 1);
        let created = s.created_at.expect("created_at");
        assert!((now - 5..=now + 5).contains(&created), "{created} vs {now}");
        if s.session_id == b {
            assert!(s.refreshed_at.is_some());
            assert_eq!(s.expires_at, now + 7200);
        } else {
            assert_eq!(s.refreshed_at, None);
            assert_eq!(s.expires_at, now + 3600);
        }
    }
    let (one, more) = SessionStore::list(db.as_ref(), user, 1).await.unwrap();
    assert_eq!((one.len(), more), (1, true));
}

/// A device's one-time prekey ids, read from the sort keys, in numeric order.
async fn one_time_ids_are_listed_in_order(e: Engine) {
    let db = e.db;
    let a = account(&name(), 12, 3);
    UserStore::create(db.as_ref(), &a).await.unwrap();
    let (ec, kyber) = db.one_time_ids(a.user_id.into()).await.unwrap();
    assert_eq!(ec, (1..=12).collect::<Vec<u32>>());
    assert_eq!(kyber, vec![100, 101, 102]);
    let (ec, kyber) = db
        .one_time_ids(DeviceAddress::new(a.user_id, 2))
        .await
        .unwrap();
    assert!(ec.is_empty() && kyber.is_empty());
}

const DAY: u64 = 86_400;
const LIFETIME: u64 = 30 * DAY;

fn upload(created_at: u64, size: u64) -> UploadRecord {
    UploadRecord {
        id: relay_tests::attachments::unissued_id(),
        size,
        created_at,
        expires_at: created_at + LIFETIME,
    }
}

/// A user's uploads: recorded only while the user exists, listed oldest first without the
/// expired ones and at most `max`, counted per UTC day up to the cap, and all forgotten.
async fn uploads_are_indexed_in_order_capped_per_day_and_forgotten(e: Engine) {
    let db = e.db;
    let user = registered(&db).await;
    let now = unix_secs();
    let today = now / DAY * DAY;
    // Today's: four, at the cap of four a day.
    let todays: Vec<UploadRecord> = (0..4).map(|i| upload(today + i, 100 + i)).collect();
    // In reverse, so the order listed is the sort key's, not the writes'.
    for u in todays.iter().rev() {
        db.record(user, u, 4).await.unwrap();
    }
    match db.record(user, &upload(today + 5, 1), 4).await {
        Err(Error::RateLimited { retry_after_secs }) => {
            assert_eq!(retry_after_secs, DAY - 5)
        }
        other => panic!("a fifth upload of the day: {other:?}"),
    }
    // Yesterday's has a count of its own; one of 31 days ago expired (still stored: TTL
    // deletion is lazy).
    let yesterdays = upload(today - DAY + 7, 5);
    db.record(user, &yesterdays, 4).await.unwrap();
    let expired = upload(today - 31 * DAY, 6);
    db.record(user, &expired, 4).await.unwrap();

    let (listed, more) = db.uploads(user, 10).await.unwrap();
    assert!(!more);
    let mut want = vec![yesterdays.clone()];
    want.extend(todays.iter().cloned());
    assert_eq!(listed, want);
    let (first, more) = db.uploads(user, 2).await.unwrap();
    assert!(more);
    assert_eq!(first, want[..2].to_vec());
    let (exact, more) = db.uploads(user, 5).await.unwrap();
    assert_eq!((exact.len(), more), (5, false));
    let mut ids = db.all_ids(user).await.unwrap();
    ids.sort();
    let mut want_ids: Vec<String> = want
        .iter()
        .chain([&expired])
        .map(|u| u.id.clone())
        .collect();
    want_ids.sort();
    assert_eq!(ids, want_ids);
    // The user's groups are not confused with its uploads.
    assert!(db.of_user(user, None, 10).await.unwrap().is_empty());

    db.forget(user).await.unwrap();
    assert_eq!(db.uploads(user, 10).await.unwrap(), (vec![], false));
    assert!(db.all_ids(user).await.unwrap().is_empty());
    // The day's count went too.
    db.record(user, &upload(today + 9, 1), 1).await.unwrap();

    // Nothing is recorded for a user that does not exist (deleted).
    let gone = Uuid::new_v4();
    assert!(matches!(
        db.record(gone, &upload(now, 1), 4).await,
        Err(Error::UserNotFound)
    ));
    assert!(db.all_ids(gone).await.unwrap().is_empty());
}

/// Concurrent uploads of one user on one day: exactly the cap is recorded.
async fn concurrent_uploads_stop_at_the_days_cap(e: Engine) {
    let db = e.db.clone();
    let user = registered(&db).await;
    let today = unix_secs() / DAY * DAY;
    let uploads: Vec<UploadRecord> = (0..8).map(|i| upload(today + i, 1)).collect();
    let results = e
        .contend(uploads.iter().map(|u| db.record(user, u, 3)).collect())
        .await;
    let recorded = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(recorded, 3, "{results:?}");
    assert!(results
        .iter()
        .all(|r| matches!(r, Ok(()) | Err(Error::RateLimited { .. }))));
    assert_eq!(db.uploads(user, 100).await.unwrap().0.len(), 3);
}

macro_rules! on_engine {
    ($engine:ident, $url:expr, $linearizable:expr, $($case:ident),* $(,)?) => {
        mod $engine {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(super::engine($url, $linearizable).await).await
                }
            )*
        }
    };
}

macro_rules! on_both_engines {
    ($($case:ident),* $(,)?) => {
        on_engine!(dynoxide, &relay_tests::servers::servers().dynamodb_url, true, $($case),*);
        on_engine!(moto, relay_tests::servers::moto(), false, $($case),*);
    };
}

on_both_engines!(
    registration_claims_a_name_once,
    one_time_keys_are_taken_once,
    a_failed_fetch_puts_its_kyber_key_back,
    uploads_and_counts,
    expired_sessions_are_filtered_when_read,
    sessions_rotate_conditionally_and_delete_all,
    deleting_a_user_removes_everything,
    sessions_need_the_user,
    devices_link_and_go_under_the_cap,
    accounts_from_before_devices_get_a_list,
    relinks_may_not_repeat_a_retired_registration_id,
    groups_change_at_their_version,
    concurrent_group_changes_at_one_version_write_one,
    a_users_groups_page_by_id,
    deleting_a_large_group_drops_every_index_entry,
    the_largest_roster_fits_one_item,
    mls_state_is_written_in_chunks_with_the_roster,
    concurrent_mls_changes_at_one_version_write_one,
    key_packages_are_counted_claimed_and_recorded,
    concurrent_key_package_claims_take_each_once,
    exhausted_key_packages_take_nothing,
    key_packages_go_with_the_device_and_the_account,
    renames_claim_a_name_once,
    a_rename_racing_a_deletion_leaves_no_claim,
    sessions_are_listed_without_secrets,
    one_time_ids_are_listed_in_order,
    uploads_are_indexed_in_order_capped_per_day_and_forgotten,
    concurrent_uploads_stop_at_the_days_cap,
);
