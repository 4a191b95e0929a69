//! MLS groups end to end: real mls-rs clients (`TestMember`, one per device) over real HTTP and
//! WebSocket. The relay is the group's Delivery Service: it hands out KeyPackages once, accepts
//! one Commit per epoch (only one in step with the roster and all of each user's devices),
//! tells the other tree devices (and the devices a Welcome is for) with a notice they follow to
//! `GET …/mls/commits/{epoch}`, and relays application messages of the current epoch (or the
//! one before) to the tree.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use futures::future::join_all;
use futures::stream::{self, StreamExt};
use relay_tests::acks::{receive_pushed, reply_alone};
use relay_tests::client::{
    delete_auth, error_code, get_auth, post_auth_json, put_auth, status_json,
};
use relay_tests::devices::{address, body_of, link, Device};
use relay_tests::{Stack, User, Ws};
use serde_json::{json, Value};
use shared::mls::testing::{Committed, TestMember};
use shared::model::DeviceAddress;
use shared::validation::{base64, encode};
use uuid::Uuid;

/// One device of a test user: its session, its MLS client and its WebSocket.
struct Member {
    device: Device,
    mls: TestMember,
    ws: Ws,
}

impl Member {
    /// A device with its MLS client, `key_packages` KeyPackages and a last-resort one uploaded,
    /// connected.
    async fn new(stack: &Stack, device: Device, key_packages: usize) -> Self {
        let mls = TestMember::new(address(&device));
        let packages: Vec<String> = (0..key_packages)
            .map(|_| encode(&mls.key_package()))
            .collect();
        let (status, body) = upload(
            stack,
            &device,
            &json!({"key_packages": packages, "last_resort": encode(&mls.key_package())}),
        )
        .await;
        assert_eq!(status, 200, "upload: {body}");
        let ws = device.connect(stack).await;
        Self { device, mls, ws }
    }

    fn user_id(&self) -> &str {
        &self.device.user_id
    }
}

async fn upload(stack: &Stack, device: &Device, body: &Value) -> (u16, Value) {
    put_auth(stack, "/v1/mls/key_packages", &device.access, body).await
}

/// `POST /v1/groups` with `"protocol": "mls"`, the others invited: the group id.
async fn mls_group(stack: &Stack, creator: &Device, invited: &[&str]) -> Uuid {
    let (status, body) = post_auth_json(
        stack,
        "/v1/groups",
        &creator.access,
        &json!({"members": invited, "protocol": "mls"}),
    )
    .await;
    assert_eq!(status, 201, "create: {body}");
    assert_eq!(body["protocol"], "mls", "{body}");
    Uuid::parse_str(body["group_id"].as_str().unwrap()).unwrap()
}

/// The creator's device makes the MLS group alone and uploads its epoch 0.
async fn init(stack: &Stack, creator: &mut Member, group: Uuid) {
    let group_info = creator.mls.create_group(group);
    let tree = creator.mls.export_tree();
    let (status, body) = post_auth_json(
        stack,
        &format!("/v1/groups/{group}/mls/init"),
        &creator.device.access,
        &json!({"group_info": encode(&group_info), "ratchet_tree": encode(&tree)}),
    )
    .await;
    assert_eq!(status, 200, "init: {body}");
    assert_eq!(body["epoch"], 0, "{body}");
    assert_eq!(body["group"]["mls_epoch"], 0, "{body}");
}

/// `GET /v1/users/{user}/mls/key_packages` by `by`: each device's KeyPackage, by device id.
async fn claim(stack: &Stack, by: &Device, user: &str) -> BTreeMap<u64, Vec<u8>> {
    let (status, body) = claim_raw(stack, by, user).await;
    assert_eq!(status, 200, "claim: {body}");
    body["key_packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            let bytes = base64("kp", k["key_package"].as_str().unwrap()).unwrap();
            (k["device_id"].as_u64().unwrap(), bytes)
        })
        .collect()
}

async fn claim_raw(stack: &Stack, by: &Device, user: &str) -> (u16, Value) {
    get_auth(
        stack,
        &format!("/v1/users/{user}/mls/key_packages"),
        &by.access,
    )
    .await
}

/// The KeyPackages of all these users' devices not yet in `adder`'s tree.
async fn key_packages_of(stack: &Stack, adder: &Member, users: &[&str]) -> Vec<Vec<u8>> {
    let in_tree = adder.mls.devices();
    let mut packages = Vec::new();
    for user in users {
        let id = Uuid::parse_str(user).unwrap();
        for (device, kp) in claim(stack, &adder.device, user).await {
            if !in_tree.contains(&DeviceAddress::new(id, device as u32)) {
                packages.push(kp);
            }
        }
    }
    packages
}

/// `POST /v1/groups/{group}/mls/commits` by `by`.
async fn post_commit(
    stack: &Stack,
    by: &Device,
    group: Uuid,
    committed: &Committed,
    adds: &[&str],
    removes: &[&str],
) -> (u16, Value) {
    post_auth_json(
        stack,
        &format!("/v1/groups/{group}/mls/commits"),
        &by.access,
        &commit_body(committed, adds, removes),
    )
    .await
}

fn commit_body(committed: &Committed, adds: &[&str], removes: &[&str]) -> Value {
    json!({
        "commit": encode(&committed.commit),
        "welcome": committed.welcome.as_deref().map(encode),
        "group_info": encode(&committed.group_info),
        "adds": adds,
        "removes": removes,
    })
}

/// A commit the relay accepts: the group's epoch now.
async fn accepted(
    stack: &Stack,
    by: &Device,
    group: Uuid,
    committed: &Committed,
    adds: &[&str],
    removes: &[&str],
) -> u64 {
    let (status, body) = post_commit(stack, by, group, committed, adds, removes).await;
    assert_eq!(status, 200, "commit: {body}");
    assert_eq!(body["group"]["mls_epoch"], body["epoch"], "{body}");
    body["epoch"].as_u64().unwrap()
}

/// `GET /v1/groups/{group}`: its `mls_epoch`.
async fn group_epoch(stack: &Stack, by: &Device, group: Uuid) -> u64 {
    let (status, body) = get_auth(stack, &format!("/v1/groups/{group}"), &by.access).await;
    assert_eq!(status, 200, "group: {body}");
    body["mls_epoch"]
        .as_u64()
        .unwrap_or_else(|| panic!("{body}"))
}

async fn get_commit(stack: &Stack, by: &Device, group: Uuid, epoch: u64) -> (u16, Value) {
    get_auth(
        stack,
        &format!("/v1/groups/{group}/mls/commits/{epoch}"),
        &by.access,
    )
    .await
}

/// The next pushed envelope: a commit notice of `group` (no body, its `mls_epoch`).
async fn notice(ws: &mut Ws, group: Uuid) -> u64 {
    let envelope = receive_pushed(ws, 1).await.remove(0);
    assert_eq!(envelope["group_id"], group.to_string(), "{envelope}");
    assert_eq!(envelope["body"], "", "a notice has no body: {envelope}");
    envelope["mls_epoch"]
        .as_u64()
        .unwrap_or_else(|| panic!("not a notice: {envelope}"))
}

/// What a device does with a notice: fetches the commit of its epoch and joins with its
/// Welcome (when it is for this device) or processes it. Returns whether it joined.
async fn follow(stack: &Stack, member: &mut Member, group: Uuid) -> bool {
    let epoch = notice(&mut member.ws, group).await;
    let (status, body) = get_commit(stack, &member.device, group, epoch).await;
    assert_eq!(status, 200, "commit {epoch}: {body}");
    assert_eq!(body["epoch"], epoch, "{body}");
    let joined = match body["welcome"].as_str() {
        Some(welcome) => {
            let tree = body["ratchet_tree"]
                .as_str()
                .expect("a tree with the welcome");
            member
                .mls
                .join(
                    &base64("welcome", welcome).unwrap(),
                    &base64("tree", tree).unwrap(),
                )
                .expect("join with the welcome and the relay's tree");
            true
        }
        None => {
            assert!(body["ratchet_tree"].is_null(), "{body}");
            let commit = base64("commit", body["commit"].as_str().unwrap()).unwrap();
            member.mls.process(&commit).expect("process the commit");
            false
        }
    };
    assert_eq!(member.mls.epoch(), epoch + 1);
    joined
}

/// An MLS application send (`devices: {}`): its reply.
async fn send_mls(ws: &mut Ws, group: Uuid, id: &str, body: &[u8]) -> Value {
    reply_alone(
        ws,
        json!({"action": "send", "id": id, "group_id": group, "body": encode(body), "devices": {}}),
    )
    .await
}

fn counts(reply: &Value) -> (u64, u64, u64) {
    assert_eq!(reply["type"], "sent", "{reply}");
    let n = |k: &str| reply[k].as_u64().unwrap();
    (n("delivered"), n("queued"), n("dropped"))
}

/// The next pushed envelope, an application message of `group` from `from`: its plaintext.
async fn receive(member: &mut Member, group: Uuid, from: &Device) -> Vec<u8> {
    let envelope = receive_pushed(&mut member.ws, 1).await.remove(0);
    assert_eq!(envelope["group_id"], group.to_string(), "{envelope}");
    assert_eq!(envelope["from"], from.user_id.as_str(), "{envelope}");
    assert_eq!(envelope["source_device"], from.device_id, "{envelope}");
    assert!(envelope["mls_epoch"].is_null(), "{envelope}");
    member
        .mls
        .decrypt(&body_of(&envelope))
        .expect("a member decrypts")
}

/// Nothing was pushed to this socket (the relay pushes before it answers; a ping's pong comes
/// after whatever came before).
async fn nothing_pushed(ws: &mut Ws) {
    let frames = ws.frames_before_pong().await;
    assert!(frames.is_empty(), "pushed: {frames:?}");
}

/// Users with one device each, every device a `Member` with two KeyPackages.
async fn members(stack: &Stack, n: usize) -> Vec<Member> {
    let users = stream::iter(0..n)
        .map(|_| User::builder(stack).attempts(5).create())
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await;
    stream::iter(users)
        .map(|u| Member::new(stack, Device::primary(&u), 2))
        .buffer_unordered(8)
        .collect()
        .await
}

/// An MLS group of `members` (the first creates it and adds the others in one commit; every
/// other one joins): at epoch 1.
async fn joined_group(stack: &Stack, members: &mut [Member]) -> Uuid {
    let (creator, others) = members.split_first_mut().unwrap();
    let invited: Vec<&str> = others.iter().map(|m| m.user_id()).collect();
    let group = mls_group(stack, &creator.device, &invited).await;
    init(stack, creator, group).await;
    let packages = key_packages_of(stack, creator, &invited).await;
    let committed = creator.mls.add(&packages);
    assert_eq!(
        accepted(stack, &creator.device, group, &committed, &invited, &[]).await,
        1
    );
    for m in others.iter_mut() {
        assert!(follow(stack, m, group).await, "welcomed");
    }
    group
}

fn error_epoch(body: &Value) -> u64 {
    body["error"]["epoch"]
        .as_u64()
        .unwrap_or_else(|| panic!("no error.epoch: {body}"))
}

#[tokio::test]
async fn three_users_with_two_devices_each_add_message_remove_and_update() {
    let stack = Stack::start().await;
    let users: Vec<User> = join_all((0..3).map(|_| User::builder(&stack).create())).await;
    let mut devices = Vec::new();
    for (i, user) in users.iter().enumerate() {
        devices.push(Member::new(&stack, Device::primary(user), 2).await);
        let second = link(&stack, user, 500 + i as u64).await;
        devices.push(Member::new(&stack, second, 2).await);
    }
    let [a1, a2, b1, b2, c1, c2] = &mut devices[..] else {
        unreachable!()
    };
    let (alice, bob, carol) = (
        a1.user_id().to_string(),
        b1.user_id().to_string(),
        c1.user_id().to_string(),
    );
    let group = mls_group(&stack, &a1.device, &[&bob, &carol]).await;
    init(&stack, a1, group).await;
    assert_eq!(group_epoch(&stack, &a1.device, group).await, 0);

    // Alice's own second device and both of Bob's, one KeyPackage each (Alice's first device is
    // in the tree already: its claimed KeyPackage stays unused).
    let packages = key_packages_of(&stack, a1, &[&alice, &bob]).await;
    assert_eq!(packages.len(), 3);
    let committed = a1.mls.add(&packages);
    assert!(committed.welcome.is_some());
    let epoch = accepted(&stack, &a1.device, group, &committed, &[&alice, &bob], &[]).await;
    assert_eq!(epoch, 1);
    assert_eq!(group_epoch(&stack, &b1.device, group).await, 1);
    for m in [&mut *a2, &mut *b1, &mut *b2] {
        assert!(follow(&stack, m, group).await, "{:?} joined", m.device);
    }
    // Carol is invited, not in the tree: she has nothing to follow.
    nothing_pushed(&mut c1.ws).await;

    // Carol's two devices: the welcome and the tree for them, the commit for the others.
    let packages = key_packages_of(&stack, a1, &[&carol]).await;
    let committed = a1.mls.add(&packages);
    assert_eq!(
        accepted(&stack, &a1.device, group, &committed, &[&carol], &[]).await,
        2
    );
    for m in [&mut *a2, &mut *b1, &mut *b2] {
        assert!(!follow(&stack, m, group).await, "processed, not welcomed");
    }
    for m in [&mut *c1, &mut *c2] {
        assert!(follow(&stack, m, group).await, "welcomed");
    }
    let tree: BTreeSet<DeviceAddress> = [&*a1, &*a2, &*b1, &*b2, &*c1, &*c2]
        .iter()
        .map(|m| address(&m.device))
        .collect();
    for m in [&*a1, &*a2, &*b1, &*b2, &*c1, &*c2] {
        assert_eq!(m.mls.devices(), tree, "every client sees the same tree");
    }

    // One application message to the group reaches every other tree device.
    let body = a1.mls.encrypt(b"hello, group");
    let reply = send_mls(&mut a1.ws, group, "m1", &body).await;
    assert_eq!(counts(&reply), (5, 0, 0), "{reply}");
    for m in [&mut *a2, &mut *b1, &mut *b2, &mut *c1, &mut *c2] {
        assert_eq!(receive(m, group, &a1.device).await, b"hello, group");
    }

    // Carol is removed (all her devices, and she leaves the roster).
    let committed = a1.mls.remove(&[address(&c1.device), address(&c2.device)]);
    assert_eq!(
        accepted(&stack, &a1.device, group, &committed, &[], &[&carol]).await,
        3
    );
    for m in [&mut *a2, &mut *b1, &mut *b2] {
        follow(&stack, m, group).await;
    }
    nothing_pushed(&mut c1.ws).await;
    let (status, body) = get_auth(&stack, &format!("/v1/groups/{group}"), &a1.device.access).await;
    assert_eq!(status, 200);
    let roster: Vec<&str> = body["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["user_id"].as_str().unwrap())
        .collect();
    assert!(!roster.contains(&carol.as_str()), "{body}");

    // Bob's update: an empty commit with a fresh path; then his message reaches the others.
    let committed = b1.mls.update();
    assert!(committed.welcome.is_none());
    assert_eq!(
        accepted(&stack, &b1.device, group, &committed, &[], &[]).await,
        4
    );
    for m in [&mut *a1, &mut *a2, &mut *b2] {
        follow(&stack, m, group).await;
    }
    assert_eq!(group_epoch(&stack, &a2.device, group).await, 4);
    let body = b1.mls.encrypt(b"after the update");
    let reply = send_mls(&mut b1.ws, group, "m2", &body).await;
    assert_eq!(counts(&reply), (3, 0, 0), "{reply}");
    for m in [&mut *a1, &mut *a2, &mut *b2] {
        assert_eq!(receive(m, group, &b1.device).await, b"after the update");
    }
    nothing_pushed(&mut b1.ws).await;
    nothing_pushed(&mut c2.ws).await;
}

#[tokio::test]
async fn of_eight_concurrent_commits_at_one_epoch_exactly_one_wins() {
    let stack = Stack::start().await;
    let mut all = members(&stack, 8).await;
    let group = joined_group(&stack, &mut all).await;

    let commits: Vec<Committed> = all.iter_mut().map(|m| m.mls.update()).collect();
    let answers = join_all(
        all.iter()
            .zip(&commits)
            .map(|(m, c)| post_commit(&stack, &m.device, group, c, &[], &[])),
    )
    .await;
    let winners: Vec<usize> = (0..8).filter(|&i| answers[i].0 == 200).collect();
    assert_eq!(winners.len(), 1, "{answers:?}");
    let winner = winners[0];
    assert_eq!(answers[winner].1["epoch"], 2);
    for (i, (status, body)) in answers.iter().enumerate() {
        if i != winner {
            assert_eq!(*status, 409, "{body}");
            assert_eq!(error_code(body), "stale_epoch");
            assert_eq!(error_epoch(body), 2, "{body}");
        }
    }
    assert_eq!(group_epoch(&stack, &all[0].device, group).await, 2);

    // The losers go back and take the winner's commit; then one of them commits again.
    let (status, stored) = get_commit(&stack, &all[0].device, group, 1).await;
    assert_eq!(status, 200);
    assert_eq!(stored["commit"], encode(&commits[winner].commit));
    for (i, m) in all.iter_mut().enumerate() {
        if i != winner {
            m.mls.discard_commit();
            assert!(!follow(&stack, m, group).await);
        }
    }
    nothing_pushed(&mut all[winner].ws).await;
    let next = (winner + 1) % 8;
    let committed = all[next].mls.update();
    assert_eq!(
        accepted(&stack, &all[next].device, group, &committed, &[], &[]).await,
        3
    );
}

#[tokio::test]
async fn a_commit_adding_one_of_two_devices_is_refused_naming_the_missing_one() {
    let stack = Stack::start().await;
    let (alice, bob) = User::pair(&stack).await;
    let mut a1 = Member::new(&stack, Device::primary(&alice), 2).await;
    let mut b1 = Member::new(&stack, Device::primary(&bob), 2).await;
    let mut b2 = Member::new(&stack, link(&stack, &bob, 77).await, 2).await;
    let group = mls_group(&stack, &a1.device, &[&bob.user_id]).await;
    init(&stack, &mut a1, group).await;

    let packages = claim(&stack, &a1.device, &bob.user_id).await;
    let committed = a1.mls.add(&[packages[&1].clone()]);
    let (status, body) =
        post_commit(&stack, &a1.device, group, &committed, &[&bob.user_id], &[]).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(error_code(&body), "mls_client_mismatch");
    assert_eq!(
        body["error"]["users"],
        json!([{"user_id": bob.user_id, "missing": [b2.device.device_id]}]),
        "{body}"
    );
    assert_eq!(group_epoch(&stack, &a1.device, group).await, 0);
    nothing_pushed(&mut b1.ws).await;

    // The commit with both of Bob's devices is accepted; both join.
    a1.mls.discard_commit();
    let committed = a1.mls.add(&packages.values().cloned().collect::<Vec<_>>());
    assert_eq!(
        accepted(&stack, &a1.device, group, &committed, &[&bob.user_id], &[]).await,
        1
    );
    assert!(follow(&stack, &mut b1, group).await);
    assert!(follow(&stack, &mut b2, group).await);
}

#[tokio::test]
async fn a_commit_with_a_flipped_signature_or_content_byte_is_refused_and_the_honest_one_accepted()
{
    let stack = Stack::start().await;
    let mut all = members(&stack, 2).await;
    let group = joined_group(&stack, &mut all).await;
    let [alice, bob] = &mut all[..] else {
        unreachable!()
    };

    let honest = bob.mls.update();
    // A member's PublicMessage Commit ends with the signature (64 bytes), the confirmation tag
    // and the membership tag (32 bytes each), each after its one-byte length.
    let mut forged = honest.clone();
    let len = forged.commit.len();
    assert_eq!(forged.commit[len - 131], 64, "the signature's length");
    forged.commit[len - 100] ^= 0x01;
    let (status, body) = post_commit(&stack, &bob.device, group, &forged, &[], &[]).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(error_code(&body), "invalid_commit");
    assert_eq!(group_epoch(&stack, &alice.device, group).await, 1);
    nothing_pushed(&mut alice.ws).await;

    // Content changed after signing (a byte of the update path: what a forged proposal or
    // path is to the relay) is refused the same way.
    let mut altered = honest.clone();
    let middle = altered.commit.len() / 2;
    altered.commit[middle] ^= 0x01;
    let (status, body) = post_commit(&stack, &bob.device, group, &altered, &[], &[]).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(error_code(&body), "invalid_commit");
    assert_eq!(group_epoch(&stack, &alice.device, group).await, 1);

    assert_eq!(
        accepted(&stack, &bob.device, group, &honest, &[], &[]).await,
        2
    );
    assert!(!follow(&stack, alice, group).await);
}

#[tokio::test]
async fn only_the_winning_commit_s_welcome_is_delivered() {
    let stack = Stack::start().await;
    let mut all = members(&stack, 4).await;
    let (mut carol, mut dave) = (all.remove(2), all.remove(2));
    let group = joined_group(&stack, &mut all).await;
    let (carol_id, dave_id) = (carol.user_id().to_string(), dave.user_id().to_string());
    // Carol and Dave invited; Bob made an admin so that he may add others too.
    let (status, body) = post_auth_json(
        &stack,
        &format!("/v1/groups/{group}/members"),
        &all[0].device.access,
        &json!({"user_ids": [carol_id, dave_id]}),
    )
    .await;
    assert_eq!(status, 200, "invite: {body}");
    let request = stack
        .http
        .patch(stack.url(&format!("/v1/groups/{group}/members/{}", all[1].user_id())))
        .bearer_auth(&all[0].device.access)
        .json(&json!({"role": "admin"}));
    let (status, body) = status_json(request.send().await.unwrap()).await;
    assert_eq!(status, 200, "role: {body}");

    // Alice adds Carol while Bob adds Dave, at the same epoch.
    let for_carol = key_packages_of(&stack, &all[0], &[&carol_id]).await;
    let for_dave = key_packages_of(&stack, &all[1], &[&dave_id]).await;
    let by_alice = all[0].mls.add(&for_carol);
    let by_bob = all[1].mls.add(&for_dave);
    let (carol_adds, dave_adds) = ([carol_id.as_str()], [dave_id.as_str()]);
    let (a, b) = tokio::join!(
        post_commit(&stack, &all[0].device, group, &by_alice, &carol_adds, &[]),
        post_commit(&stack, &all[1].device, group, &by_bob, &dave_adds, &[]),
    );
    assert!(
        [a.0, b.0] == [200, 409] || [a.0, b.0] == [409, 200],
        "{a:?} {b:?}"
    );
    let alice_won = a.0 == 200;
    let (lost_body, winning_commit) = if alice_won {
        (&b.1, &by_alice)
    } else {
        (&a.1, &by_bob)
    };
    assert_eq!(error_code(lost_body), "stale_epoch");
    let (winner, loser) = if alice_won { (0, 1) } else { (1, 0) };
    let (added, left_out, loser_commit, loser_adds) = if alice_won {
        (&mut carol, &mut dave, &by_bob, dave_id.clone())
    } else {
        (&mut dave, &mut carol, &by_alice, carol_id.clone())
    };

    // The winner's added device joins; the loser's gets no notice and no Welcome.
    assert!(follow(&stack, added, group).await);
    nothing_pushed(&mut left_out.ws).await;
    let (status, stored) = get_commit(&stack, &left_out.device, group, 1).await;
    assert_eq!(status, 200, "{stored}");
    assert_eq!(stored["commit"], encode(&winning_commit.commit));
    assert!(
        stored["welcome"].is_null() && stored["ratchet_tree"].is_null(),
        "{stored}"
    );
    assert_ne!(winning_commit.commit, loser_commit.commit);

    // The loser takes the winner's commit and adds its user again, now welcomed.
    all[loser].mls.discard_commit();
    assert!(!follow(&stack, &mut all[loser], group).await);
    nothing_pushed(&mut all[winner].ws).await;
    let packages: Vec<Vec<u8>> = if alice_won { for_dave } else { for_carol };
    let again = all[loser].mls.add(&packages);
    assert_eq!(
        accepted(
            &stack,
            &all[loser].device,
            group,
            &again,
            &[&loser_adds],
            &[]
        )
        .await,
        3
    );
    assert!(follow(&stack, left_out, group).await);
    assert!(!follow(&stack, added, group).await);
    assert!(!follow(&stack, &mut all[winner], group).await);
}

#[tokio::test]
async fn a_removed_device_neither_reads_the_next_epoch_nor_sends() {
    let stack = Stack::start().await;
    let mut all = members(&stack, 3).await;
    let group = joined_group(&stack, &mut all).await;
    let [alice, bob, carol] = &mut all[..] else {
        unreachable!()
    };

    // Carol leaves the roster; her device is still in the tree.
    let path = format!("/v1/groups/{group}/members/{}", carol.user_id());
    assert_eq!(delete_auth(&stack, &path, &alice.device.access).await, 200);
    let body = carol.mls.encrypt(b"still here?");
    let reply = send_mls(&mut carol.ws, group, "c1", &body).await;
    assert_eq!(reply["type"], "error", "{reply}");
    assert_eq!(reply["code"], "not_a_member", "{reply}");
    nothing_pushed(&mut alice.ws).await;
    nothing_pushed(&mut bob.ws).await;

    // The next commit must remove her device.
    let update = alice.mls.update();
    let (status, body) = post_commit(&stack, &alice.device, group, &update, &[], &[]).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(error_code(&body), "mls_client_mismatch");
    assert_eq!(
        body["error"]["users"],
        json!([{"user_id": carol.user_id(), "extra": [1]}]),
        "{body}"
    );
    alice.mls.discard_commit();
    let removal = alice.mls.remove(&[address(&carol.device)]);
    assert_eq!(
        accepted(&stack, &alice.device, group, &removal, &[], &[]).await,
        2
    );
    assert!(!follow(&stack, bob, group).await);

    // The next epoch's message reaches Bob, not Carol, and Carol's client cannot read it.
    let body = alice.mls.encrypt(b"without carol");
    let reply = send_mls(&mut alice.ws, group, "a1", &body).await;
    assert_eq!(counts(&reply), (1, 0, 0), "{reply}");
    assert_eq!(receive(bob, group, &alice.device).await, b"without carol");
    nothing_pushed(&mut carol.ws).await;
    assert!(carol.mls.decrypt(&body).is_err());
    // Nor may she read the group's commits any more.
    let (status, _) = get_commit(&stack, &carol.device, group, 1).await;
    assert_eq!(status, 404);
    let reply = send_mls(&mut carol.ws, group, "c2", &carol.mls.encrypt(b"x")).await;
    assert_eq!(reply["code"], "not_a_member", "{reply}");
}

#[tokio::test]
async fn key_packages_are_handed_out_once_then_the_last_resort_one() {
    let stack = Stack::start().await;
    let target = User::builder(&stack).create().await;
    let device = Device::primary(&target);
    let mls = TestMember::new(address(&device));
    let packages: Vec<String> = (0..5).map(|_| encode(&mls.key_package())).collect();
    let last_resort = encode(&mls.key_package());
    let (status, body) = upload(
        &stack,
        &device,
        &json!({"key_packages": packages, "last_resort": last_resort}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"count": 5, "last_resort": true}));

    // 20 users claim at once: each of the 5 goes to exactly one, the others get the last-resort.
    let claimers: Vec<User> = stream::iter(0..20)
        .map(|_| User::builder(&stack).attempts(5).create())
        .buffer_unordered(8)
        .collect()
        .await;
    let devices: Vec<Device> = claimers.iter().map(Device::primary).collect();
    let answers = join_all(
        devices
            .iter()
            .map(|d| claim_raw(&stack, d, &target.user_id)),
    )
    .await;
    let mut once = Vec::new();
    let mut resorts = 0;
    for (status, body) in &answers {
        assert_eq!(*status, 200, "{body}");
        let list = body["key_packages"].as_array().unwrap();
        assert_eq!(list.len(), 1, "{body}");
        let kp = list[0]["key_package"].as_str().unwrap().to_string();
        if list[0]["last_resort"].as_bool().unwrap() {
            assert_eq!(kp, last_resort);
            resorts += 1;
        } else {
            once.push(kp);
        }
    }
    assert_eq!(resorts, 15);
    let distinct: BTreeSet<String> = once.iter().cloned().collect();
    assert_eq!(distinct.len(), 5, "never handed out twice");
    assert_eq!(distinct, packages.iter().cloned().collect());
    let (status, body) = get_auth(&stack, "/v1/mls/key_packages/count", &device.access).await;
    assert_eq!(status, 200);
    assert_eq!(body, json!({"count": 0, "last_resort": true}));

    // A KeyPackage whose credential names another device is refused.
    let other = TestMember::new(DeviceAddress::new(Uuid::new_v4(), 1));
    let (status, body) = upload(
        &stack,
        &device,
        &json!({"key_packages": [encode(&other.key_package())]}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(error_code(&body), "invalid_key_package");
    let (_, body) = get_auth(&stack, "/v1/mls/key_packages/count", &device.access).await;
    assert_eq!(body["count"], 0);
}

/// A device adding its account's other devices takes one KeyPackage of each of them and none of
/// its own: it is in the group already.
#[tokio::test]
async fn a_claim_of_ones_own_account_spends_none_of_the_calling_device_s_key_packages() {
    let stack = Stack::start().await;
    let user = User::builder(&stack).create().await;
    let first = Member::new(&stack, Device::primary(&user), 2).await;
    let second = Member::new(&stack, link(&stack, &user, 4242).await, 2).await;
    let (status, body) = claim_raw(&stack, &first.device, &user.user_id).await;
    assert_eq!(status, 200, "{body}");
    let list = body["key_packages"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{body}");
    assert_eq!(list[0]["device_id"], second.device.device_id);
    for (member, left) in [(&first, 2), (&second, 1)] {
        let (_, body) = get_auth(&stack, "/v1/mls/key_packages/count", &member.device.access).await;
        assert_eq!(body["count"], left, "device {}", member.device.device_id);
    }
}

/// The escape hatch: an admin starts the group over (a new generation at epoch 0) when its
/// members lost sync. A plain member may not; what was sent in the old state is refused; the
/// members are added back by a commit and the group works again.
#[tokio::test]
async fn an_admin_restarts_a_group_that_lost_sync_and_adds_the_members_back() {
    let stack = Stack::start().await;
    let mut all = members(&stack, 2).await;
    let group = joined_group(&stack, &mut all).await;
    let [alice, bob] = &mut all[..] else {
        unreachable!()
    };
    let old_message = bob.mls.encrypt(b"from the old state");
    let old_update = bob.mls.update();

    // Bob is a plain member: he may not restart it.
    let mut bob_again = TestMember::new(address(&bob.device));
    let group_info = bob_again.create_group(group);
    let (status, body) = post_auth_json(
        &stack,
        &format!("/v1/groups/{group}/mls/init"),
        &bob.device.access,
        &json!({"group_info": encode(&group_info), "ratchet_tree": encode(&bob_again.export_tree())}),
    )
    .await;
    assert_eq!((status, error_code(&body)), (403, "not_an_admin"), "{body}");

    // Alice starts over with a new MLS group of her own device.
    alice.mls = TestMember::new(address(&alice.device));
    init(&stack, alice, group).await;
    assert_eq!(group_epoch(&stack, &alice.device, group).await, 0);

    // What Bob made in the old state is refused, and reaches no one.
    let reply = send_mls(&mut bob.ws, group, "old", &old_message).await;
    assert_eq!(reply["code"], "stale_epoch", "{reply}");
    assert_eq!(reply["epoch"], 0, "{reply}");
    let (status, body) = post_commit(&stack, &bob.device, group, &old_update, &[], &[]).await;
    assert_eq!((status, error_code(&body)), (409, "stale_epoch"), "{body}");
    assert_eq!(error_epoch(&body), 0);
    nothing_pushed(&mut alice.ws).await;

    // Bob, a member of the roster without a device in the tree, is added back and reads again.
    let bob_id = bob.user_id().to_string();
    let packages = key_packages_of(&stack, alice, &[&bob_id]).await;
    let committed = alice.mls.add(&packages);
    assert_eq!(
        accepted(&stack, &alice.device, group, &committed, &[&bob_id], &[]).await,
        1
    );
    assert!(
        follow(&stack, bob, group).await,
        "welcomed into the new state"
    );
    let message = alice.mls.encrypt(b"after the restart");
    let reply = send_mls(&mut alice.ws, group, "new", &message).await;
    assert_eq!(counts(&reply), (1, 0, 0), "{reply}");
    assert_eq!(
        receive(bob, group, &alice.device).await,
        b"after the restart"
    );
}

#[tokio::test]
async fn an_application_message_two_epochs_old_is_refused_one_epoch_old_accepted() {
    let stack = Stack::start().await;
    let mut all = members(&stack, 2).await;
    let group = joined_group(&stack, &mut all).await;
    let [alice, bob] = &mut all[..] else {
        unreachable!()
    };

    let old = alice.mls.encrypt(b"from epoch 1");
    for expected in [2, 3] {
        let update = alice.mls.update();
        assert_eq!(
            accepted(&stack, &alice.device, group, &update, &[], &[]).await,
            expected
        );
        follow(&stack, bob, group).await;
    }
    let reply = send_mls(&mut alice.ws, group, "old", &old).await;
    assert_eq!(reply["type"], "error", "{reply}");
    assert_eq!(reply["code"], "stale_epoch", "{reply}");
    assert_eq!(reply["epoch"], 3, "the group's epoch: {reply}");
    assert_eq!(reply["id"], "old");
    nothing_pushed(&mut bob.ws).await;

    // Sent while a commit is accepted: one epoch behind still goes through, and Bob reads it.
    let late = alice.mls.encrypt(b"from epoch 3");
    let update = alice.mls.update();
    assert_eq!(
        accepted(&stack, &alice.device, group, &update, &[], &[]).await,
        4
    );
    follow(&stack, bob, group).await;
    let reply = send_mls(&mut alice.ws, group, "late", &late).await;
    assert_eq!(counts(&reply), (1, 0, 0), "{reply}");
    assert_eq!(receive(bob, group, &alice.device).await, b"from epoch 3");
}

#[tokio::test]
async fn a_hundred_member_group_built_by_clients_relays_one_message_to_all() {
    let stack = Stack::start().await;
    let started = Instant::now();
    let mut all = members(&stack, 100).await;
    let setup = started.elapsed();
    let (creator, others) = all.split_first_mut().unwrap();
    let invited: Vec<String> = others.iter().map(|m| m.user_id().to_string()).collect();
    let refs: Vec<&str> = invited.iter().map(String::as_str).collect();
    // Creation lists at most 98 users: the last one is invited after.
    let group = mls_group(&stack, &creator.device, &refs[..98]).await;
    let (status, body) = post_auth_json(
        &stack,
        &format!("/v1/groups/{group}/members"),
        &creator.device.access,
        &json!({"user_ids": &refs[98..]}),
    )
    .await;
    assert_eq!(status, 200, "invite: {body}");
    init(&stack, creator, group).await;

    let built = Instant::now();
    for (batch, users) in refs.chunks(50).enumerate() {
        let packages = key_packages_of(&stack, creator, users).await;
        let committed = creator.mls.add(&packages);
        assert_eq!(
            accepted(&stack, &creator.device, group, &committed, users, &[]).await,
            batch as u64 + 1
        );
    }
    let commits = built.elapsed();

    // Every device was told of each commit that concerns it, joins with its Welcome and follows
    // the later commit.
    let joined = Instant::now();
    for (i, m) in others.iter_mut().enumerate() {
        assert!(follow(&stack, m, group).await, "{i} welcomed");
        if i < 50 {
            assert!(
                !follow(&stack, m, group).await,
                "{i} processed the second add"
            );
        }
        assert_eq!(m.mls.epoch(), 2);
    }
    let joins = joined.elapsed();
    assert_eq!(group_epoch(&stack, &creator.device, group).await, 2);

    let sent = Instant::now();
    let body = creator.mls.encrypt(b"to a hundred");
    let reply = send_mls(&mut creator.ws, group, "all", &body).await;
    assert_eq!(counts(&reply), (99, 0, 0), "{reply}");
    let from = creator.device.clone();
    for (i, m) in others.iter_mut().enumerate() {
        let envelope = receive_pushed(&mut m.ws, 1).await.remove(0);
        assert_eq!(envelope["group_id"], group.to_string());
        assert_eq!(envelope["from"], from.user_id.as_str());
        assert_eq!(body_of(&envelope), body);
        assert_eq!(m.mls.decrypt(&body).unwrap(), b"to a hundred", "{i}");
    }
    eprintln!(
        "100-member MLS group: {setup:?} to register 100 users and upload KeyPackages, \
         {commits:?} for the 2 add commits (claims included), {joins:?} for 99 joins, \
         {:?} to send, receive and decrypt 99 copies; {:?} in all",
        sent.elapsed(),
        started.elapsed()
    );
}

#[tokio::test]
async fn signal_routes_and_mls_routes_stay_apart() {
    let stack = Stack::start().await;
    let mut all = members(&stack, 2).await;
    let group = joined_group(&stack, &mut all).await;

    // A Signal group has no MLS commits.
    let (status, body) = post_auth_json(
        &stack,
        "/v1/groups",
        &all[0].device.access,
        &json!({"members": [all[1].user_id()]}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["protocol"], "signal");
    let signal = body["group_id"].as_str().unwrap().to_string();
    let (status, body) = post_auth_json(
        &stack,
        &format!("/v1/groups/{signal}/mls/commits"),
        &all[0].device.access,
        &json!({"commit": encode(b"x"), "group_info": encode(b"y")}),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(error_code(&body), "wrong_protocol");

    // A Signal-form send (a device map) to an MLS group is refused; nothing is delivered.
    let [alice, bob] = &mut all[..] else {
        unreachable!()
    };
    let body = alice.mls.encrypt(b"addressed");
    let frame = json!({
        "action": "send", "id": "s", "group_id": group, "body": encode(&body),
        "devices": {bob.user_id(): [{"device_id": 1, "registration_id": bob.device.registration_id}]},
    });
    let reply = reply_alone(&mut alice.ws, frame).await;
    assert_eq!(reply["type"], "error", "{reply}");
    assert_eq!(reply["code"], "invalid_frame", "{reply}");
    nothing_pushed(&mut bob.ws).await;
}
