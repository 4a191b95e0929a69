//! The relay's MLS checks against real mls-rs clients: 3 users with 2 devices each.

use std::collections::BTreeSet;

use uuid::Uuid;

use super::testing::TestMember;
use super::*;
use crate::error::Error;
use crate::groups::GroupId;
use crate::model::DeviceAddress;

/// Three users (a, b, c), devices 1 and 2 each: members[0..2] are a's, [2..4] b's, [4..6] c's.
fn members() -> Vec<TestMember> {
    let users = [Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4()];
    users
        .iter()
        .flat_map(|user| [1, 2].map(|device| TestMember::new(DeviceAddress::new(*user, device))))
        .collect()
}

fn set<const N: usize>(devices: [DeviceAddress; N]) -> BTreeSet<DeviceAddress> {
    devices.into_iter().collect()
}

/// A group made by members[0], tracked from its first GroupInfo and tree.
fn created(members: &mut [TestMember]) -> (GroupId, Tracked) {
    let group_id = Uuid::new_v4();
    let group_info = members[0].create_group(group_id);
    let tracked = observe(group_id, &group_info, Some(&members[0].export_tree())).unwrap();
    (group_id, tracked)
}

/// members[committer] adds members[joiners] (KeyPackages checked as on upload), the relay
/// applies it, the joiners join with the Welcome and the relay's tree, the others process it.
fn add(
    members: &mut [TestMember],
    group_id: GroupId,
    tracked: &Tracked,
    committer: usize,
    joiners: &[usize],
) -> Applied {
    let packages: Vec<Vec<u8>> = joiners.iter().map(|&j| members[j].key_package()).collect();
    let mut refs: Vec<String> = joiners
        .iter()
        .zip(&packages)
        .map(|(&j, kp)| check_key_package(kp, members[j].device).unwrap().reference)
        .collect();
    let committed = members[committer].add(&packages);
    let applied = apply_commit(&tracked.state, group_id, &committed.commit).unwrap();
    check_group_info(&applied.tracked, group_id, &committed.group_info).unwrap();

    let welcome = committed.welcome.expect("an add has a Welcome");
    let mut named = welcome_refs(&welcome).unwrap();
    named.sort();
    refs.sort();
    assert_eq!(named, refs);

    let tree = export_tree(&applied.tracked.state).unwrap();
    for (i, member) in members.iter_mut().enumerate() {
        if joiners.contains(&i) {
            member.join(&welcome, &tree).unwrap();
        } else if i != committer && tracked.devices.contains(&member.device) {
            member.process(&committed.commit).unwrap();
        }
    }
    applied
}

/// Every member in the tree agrees with the relay on the epoch and the devices.
fn assert_in_step(members: &[TestMember], tracked: &Tracked) {
    for member in members
        .iter()
        .filter(|m| tracked.devices.contains(&m.device))
    {
        assert_eq!(member.epoch(), tracked.epoch, "{:?}", member.device);
        assert_eq!(member.devices(), tracked.devices, "{:?}", member.device);
    }
}

#[test]
fn identity_round_trips_and_refuses_other_forms() {
    let device = DeviceAddress::new(Uuid::new_v4(), 2);
    assert_eq!(device_of(&identity(device)), Some(device));
    let upper = format!("{}/2", device.user_id).to_uppercase();
    for bad in [upper.as_str(), "x/1", "", "/1"] {
        assert_eq!(device_of(bad.as_bytes()), None, "{bad}");
    }
    let user = device.user_id;
    for bad in [
        format!("{user}/0"),
        format!("{user}/02"),
        format!("{user}/+2"),
        format!("{user}/256"),
        format!("{user}"),
    ] {
        assert_eq!(device_of(bad.as_bytes()), None, "{bad}");
    }
}

#[test]
fn create_add_remove_update_track_the_tree() {
    let mut members = members();
    let (a1, a2, b1, b2, c1, c2) = (
        members[0].device,
        members[1].device,
        members[2].device,
        members[3].device,
        members[4].device,
        members[5].device,
    );
    let (group_id, tracked) = created(&mut members);
    assert_eq!((tracked.epoch, &tracked.devices), (0, &set([a1])));

    // a1 adds its other device and both of b's.
    let applied = add(&mut members, group_id, &tracked, 0, &[1, 2, 3]);
    assert_eq!(applied.sender, a1);
    assert_eq!(applied.added, set([a2, b1, b2]));
    assert!(applied.removed.is_empty());
    let tracked = applied.tracked;
    assert_eq!(tracked.epoch, 1);
    assert_in_step(&members, &tracked);

    // b1 adds both of c's devices.
    let applied = add(&mut members, group_id, &tracked, 2, &[4, 5]);
    assert_eq!((applied.sender, &applied.added), (b1, &set([c1, c2])));
    let tracked = applied.tracked;
    assert_in_step(&members, &tracked);

    // Everyone reads c2's application message.
    let body = members[5].encrypt(b"hello");
    for member in members.iter_mut().take(5) {
        assert_eq!(member.decrypt(&body).unwrap(), b"hello");
    }

    // a1 removes b's two devices.
    let committed = members[0].remove(&[b1, b2]);
    let applied = apply_commit(&tracked.state, group_id, &committed.commit).unwrap();
    check_group_info(&applied.tracked, group_id, &committed.group_info).unwrap();
    assert!(committed.welcome.is_none());
    assert_eq!(applied.sender, a1);
    assert!(applied.added.is_empty());
    assert_eq!(applied.removed, set([b1, b2]));
    for i in [1, 2, 3, 4, 5] {
        members[i].process(&committed.commit).unwrap();
    }
    let tracked = applied.tracked;
    assert_eq!(tracked.devices, set([a1, a2, c1, c2]));
    assert_in_step(&members, &tracked);

    // c1 updates its keys: a new epoch, no change of devices.
    let committed = members[4].update();
    let applied = apply_commit(&tracked.state, group_id, &committed.commit).unwrap();
    check_group_info(&applied.tracked, group_id, &committed.group_info).unwrap();
    assert_eq!(applied.sender, c1);
    assert!(applied.added.is_empty() && applied.removed.is_empty());
    assert_eq!(applied.tracked.epoch, tracked.epoch + 1);
    for i in [0, 1, 5] {
        members[i].process(&committed.commit).unwrap();
    }
    assert_in_step(&members, &applied.tracked);
}

#[test]
fn a_commit_with_a_flipped_signature_bit_is_refused_and_the_honest_one_still_applies() {
    let mut members = members();
    let (group_id, tracked) = created(&mut members);
    let tracked = add(&mut members, group_id, &tracked, 0, &[1, 2]).tracked;

    let committed = members[2].update();
    // A member's PublicMessage Commit ends with the signature (64 bytes), the confirmation tag
    // and the membership tag (32 bytes each), each after its one-byte length.
    let mut forged = committed.commit.clone();
    let len = forged.len();
    assert_eq!(
        (forged[len - 131], forged[len - 66], forged[len - 33]),
        (64, 32, 32)
    );
    forged[len - 100] ^= 0x01;
    let err = apply_commit(&tracked.state, group_id, &forged).unwrap_err();
    assert!(matches!(err, Error::InvalidCommit(_)), "{err:?}");

    let applied = apply_commit(&tracked.state, group_id, &committed.commit).unwrap();
    assert_eq!(applied.sender, members[2].device);
    assert_eq!(applied.tracked.epoch, tracked.epoch + 1);
}

#[test]
fn a_commit_for_another_epoch_is_stale_and_the_loser_commits_again() {
    let mut members = members();
    let (group_id, tracked) = created(&mut members);
    let tracked = add(&mut members, group_id, &tracked, 0, &[1, 2]).tracked;

    // a1 and b1 commit at the same epoch: a1's arrives first.
    let winner = members[0].update();
    let loser = members[2].update();
    let tracked = apply_commit(&tracked.state, group_id, &winner.commit)
        .unwrap()
        .tracked;
    let err = apply_commit(&tracked.state, group_id, &loser.commit).unwrap_err();
    assert!(
        matches!(err, Error::StaleEpoch { current } if current == tracked.epoch),
        "{err:?}"
    );
    // The winning commit offered again is stale too.
    let err = apply_commit(&tracked.state, group_id, &winner.commit).unwrap_err();
    assert!(matches!(err, Error::StaleEpoch { .. }), "{err:?}");

    members[2].discard_commit();
    members[2].process(&winner.commit).unwrap();
    members[1].process(&winner.commit).unwrap();
    let again = members[2].update();
    let applied = apply_commit(&tracked.state, group_id, &again.commit).unwrap();
    assert_eq!(applied.sender, members[2].device);
    members[0].process(&again.commit).unwrap();
    members[1].process(&again.commit).unwrap();
    assert_in_step(&members, &applied.tracked);
}

#[test]
fn commits_of_another_group_or_not_commits_are_refused() {
    let mut members = members();
    let (group_id, tracked) = created(&mut members);
    let tracked = add(&mut members, group_id, &tracked, 0, &[1]).tracked;
    let committed = members[1].update();

    let err = apply_commit(&tracked.state, Uuid::new_v4(), &committed.commit).unwrap_err();
    assert!(matches!(err, Error::InvalidCommit(_)), "{err:?}");
    for not_a_commit in [
        committed.group_info.clone(),
        members[0].encrypt(b"x"),
        members[2].key_package(),
        b"garbage".to_vec(),
    ] {
        let err = apply_commit(&tracked.state, group_id, &not_a_commit).unwrap_err();
        assert!(matches!(err, Error::InvalidCommit(_)), "{err:?}");
    }
}

#[test]
fn a_leaf_that_is_not_a_device_is_refused() {
    let mut members = members();
    let (group_id, tracked) = created(&mut members);
    let stranger = TestMember::with_identity(members[1].device, b"alice".to_vec());
    let package = stranger.key_package();
    let err = check_key_package(&package, members[1].device).unwrap_err();
    assert!(matches!(err, Error::InvalidKeyPackage(_)), "{err:?}");
    // A commit can carry a package the relay never checked: its leaf is refused all the same.
    let committed = members[0].add(&[package]);
    let err = apply_commit(&tracked.state, group_id, &committed.commit).unwrap_err();
    assert!(matches!(err, Error::InvalidCommit(_)), "{err:?}");

    let mut creator = TestMember::with_identity(members[2].device, b"bob/1".to_vec());
    let group_info = creator.create_group(group_id);
    let err = observe(group_id, &group_info, Some(&creator.export_tree())).unwrap_err();
    assert!(matches!(err, Error::InvalidCommit(_)), "{err:?}");
}

#[test]
fn key_packages_must_verify_and_name_the_uploader() {
    let members = members();
    let package = members[1].key_package();
    let checked = check_key_package(&package, members[1].device).unwrap();
    assert_eq!(checked.reference.len(), 64);
    assert!(checked
        .reference
        .chars()
        .all(|c| matches!(c, '0'..='9' | 'a'..='f')));
    assert_eq!(checked.bytes, package);

    // The same package uploaded by another device (even of the same user) is refused.
    let err = check_key_package(&package, members[0].device).unwrap_err();
    assert!(matches!(err, Error::InvalidKeyPackage(_)), "{err:?}");

    // A flipped bit in the signature (the last 64 bytes) does not verify.
    let mut forged = package.clone();
    let len = forged.len();
    forged[len - 10] ^= 0x01;
    let err = check_key_package(&forged, members[1].device).unwrap_err();
    assert!(matches!(err, Error::InvalidKeyPackage(_)), "{err:?}");

    let err = check_key_package(b"garbage", members[1].device).unwrap_err();
    assert!(matches!(err, Error::InvalidKeyPackage(_)), "{err:?}");
}

#[test]
fn observe_needs_the_groups_id_and_a_tree() {
    let mut members = members();
    let group_id = Uuid::new_v4();
    let group_info = members[0].create_group(group_id);
    let tree = members[0].export_tree();

    let err = observe(Uuid::new_v4(), &group_info, Some(&tree)).unwrap_err();
    assert!(matches!(err, Error::InvalidCommit(_)), "{err:?}");
    // Clients leave the tree out of GroupInfo: without it nothing can be verified.
    let err = observe(group_id, &group_info, None).unwrap_err();
    assert!(matches!(err, Error::InvalidCommit(_)), "{err:?}");
    // Another member's tree does not match the GroupInfo's tree hash.
    members[1].create_group(group_id);
    let err = observe(group_id, &group_info, Some(&members[1].export_tree())).unwrap_err();
    assert!(matches!(err, Error::InvalidCommit(_)), "{err:?}");
}

#[test]
fn a_group_info_must_be_the_tracked_epochs() {
    let mut members = members();
    let (group_id, tracked) = created(&mut members);
    let epoch0_info = members[0].group_info();
    let applied = add(&mut members, group_id, &tracked, 0, &[1]);

    check_group_info(&applied.tracked, group_id, &members[1].group_info()).unwrap();
    let err = check_group_info(&applied.tracked, group_id, &epoch0_info).unwrap_err();
    assert!(matches!(err, Error::InvalidCommit(_)), "{err:?}");
    let err =
        check_group_info(&applied.tracked, Uuid::new_v4(), &members[0].group_info()).unwrap_err();
    assert!(matches!(err, Error::InvalidCommit(_)), "{err:?}");

    // A GroupInfo with a flipped bit in its signature (its last 64 bytes).
    let mut forged = members[1].group_info();
    let len = forged.len();
    forged[len - 10] ^= 0x01;
    let err = check_group_info(&applied.tracked, group_id, &forged).unwrap_err();
    assert!(matches!(err, Error::InvalidCommit(_)), "{err:?}");

    // Two commits for one epoch: the GroupInfo of the one the relay did not take has the right
    // epoch number but another group context.
    let taken = members[0].update();
    let not_taken = members[1].update();
    let tracked = apply_commit(&applied.tracked.state, group_id, &taken.commit)
        .unwrap()
        .tracked;
    check_group_info(&tracked, group_id, &taken.group_info).unwrap();
    let err = check_group_info(&tracked, group_id, &not_taken.group_info).unwrap_err();
    assert!(matches!(err, Error::InvalidCommit(_)), "{err:?}");
}

#[test]
fn external_commits_are_refused() {
    let mut members = members();
    let (group_id, tracked) = created(&mut members);
    let group_info = members[0].group_info_for_external_commit();
    let tree = export_tree(&tracked.state).unwrap();
    let commit = members[1].join_externally(&group_info, &tree).unwrap();

    let err = apply_commit(&tracked.state, group_id, &commit).unwrap_err();
    assert!(matches!(err, Error::InvalidCommit(_)), "{err:?}");
    // The members accept it: refusing it is the relay's choice, not a verification failure.
    members[0].process(&commit).unwrap();
}

#[test]
fn the_exported_tree_lets_a_new_member_join_and_read() {
    let mut members = members();
    let (group_id, tracked) = created(&mut members);
    let tracked = add(&mut members, group_id, &tracked, 0, &[2]).tracked;
    let tracked = add(&mut members, group_id, &tracked, 2, &[4]).tracked;
    // members[4] joined with the relay's tree (inside `add`); it reads and is read.
    let body = members[4].encrypt(b"from c1");
    assert_eq!(members[0].decrypt(&body).unwrap(), b"from c1");
    let body = members[0].encrypt(b"from a1");
    assert_eq!(members[4].decrypt(&body).unwrap(), b"from a1");
    assert_in_step(&members, &tracked);
}

#[test]
fn application_header_reads_group_and_epoch_of_a_private_message() {
    let mut members = members();
    let (group_id, tracked) = created(&mut members);
    let tracked = add(&mut members, group_id, &tracked, 0, &[1]).tracked;

    let body = members[1].encrypt(b"secret");
    let header = application_header(&body).unwrap();
    assert_eq!(header.group_id, group_id.as_bytes().to_vec());
    assert_eq!(header.epoch, tracked.epoch);
    assert!(header.is_application);

    // The same message with the content type of a Commit (an encrypted handshake message).
    // PrivateMessage header: version and wire format (2 bytes each), the group id (one length
    // byte, 16 bytes), the epoch (8 bytes), then the content type (1 = application, 3 = commit).
    assert_eq!(body[4], 16);
    assert_eq!(&body[5..21], group_id.as_bytes());
    assert_eq!(body[21..29], tracked.epoch.to_be_bytes());
    assert_eq!(body[29], 1);
    let mut handshake = body.clone();
    handshake[29] = 3;
    let header = application_header(&handshake).unwrap();
    assert!(!header.is_application);

    // A PublicMessage Commit is not a group send's body.
    let committed = members[0].update();
    let err = application_header(&committed.commit).unwrap_err();
    assert!(matches!(err, Error::InvalidFrame(_)), "{err:?}");
    let err = application_header(b"garbage").unwrap_err();
    assert!(matches!(err, Error::InvalidFrame(_)), "{err:?}");
}

/// How large the tracked state and a joiner's tree grow (run with `--ignored --nocapture`):
/// the storage chunks state at 350,000 bytes.
#[test]
#[ignore]
fn sizes_of_a_large_group() {
    let size: usize = std::env::var("MLS_GROUP_SIZE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let mut creator = TestMember::new(DeviceAddress::new(Uuid::new_v4(), 1));
    let group_id = Uuid::new_v4();
    let group_info = creator.create_group(group_id);
    let tracked = observe(group_id, &group_info, Some(&creator.export_tree())).unwrap();
    let packages: Vec<Vec<u8>> = (1..size)
        .map(|_| TestMember::new(DeviceAddress::new(Uuid::new_v4(), 1)).key_package())
        .collect();
    let started = std::time::Instant::now();
    let committed = creator.add(&packages);
    let commit_took = started.elapsed();
    let started = std::time::Instant::now();
    let applied = apply_commit(&tracked.state, group_id, &committed.commit).unwrap();
    let apply_took = started.elapsed();
    let tracked = applied.tracked;
    let started = std::time::Instant::now();
    let updated = creator.update();
    let applied = apply_commit(&tracked.state, group_id, &updated.commit).unwrap();
    let update_took = started.elapsed();
    assert_eq!(applied.tracked.devices.len(), size);
    let tree = export_tree(&applied.tracked.state).unwrap();
    eprintln!(
        "{size} leaves: state {} B, tree {} B, add commit {} B, welcome {} B, group info {} B, \
         update commit {} B; client commit {commit_took:?}, relay apply of the adds \
         {apply_took:?}, update + apply {update_took:?}",
        applied.tracked.state.len(),
        tree.len(),
        committed.commit.len(),
        committed.welcome.map_or(0, |w| w.len()),
        updated.group_info.len(),
        updated.commit.len(),
    );
}
