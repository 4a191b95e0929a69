//! The groups of scenario 8, made over HTTP as clients make them: accounts, linked devices, a
//! group created with its first invitees, the others invited in batches, then every invitee
//! joining; and the `devices` map a member's group send carries.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use relay_tests::client::{get_auth, post_auth_json};
use relay_tests::devices::{self, Device};
use relay_tests::{Stack, User};
use serde_json::{json, Value};

use super::ws::{self, GroupTarget, WsStream};

/// The most users one create or invite request may name: the group item and one index item
/// per user go in one DynamoDB transaction of at most 100 items.
pub const INVITES_PER_REQUEST: usize = 98;

/// Joins of one group at a time: each rewrites the group's one item at the version it read, so
/// more at once mostly buys the service conflicts to retry.
const JOINS_AT_ONCE: usize = 2;

/// Registrations at a time (each hashes a password twice: registration and login).
const REGISTRATIONS_AT_ONCE: usize = 8;

/// The registration id of the members' linked devices.
pub const LINKED_REGISTRATION_ID: u64 = 4321;

/// Registers and logs in `n` users concurrently (a DynamoDB engine may refuse concurrent
/// registrations with a conflict, 503: retried).
pub async fn accounts(stack: &Stack, n: usize) -> Vec<User> {
    futures::stream::iter(0..n)
        .map(|_| User::builder(stack).attempts(8).create())
        .buffer_unordered(REGISTRATIONS_AT_ONCE)
        .collect()
        .await
}

/// Links a second device to every user, its primary's before it in each list.
pub async fn with_linked_devices(stack: &Stack, users: &[User]) -> Vec<Vec<Device>> {
    futures::stream::iter(users)
        .map(|u| async move {
            let linked = devices::link(stack, u, LINKED_REGISTRATION_ID).await;
            vec![Device::primary(u), linked]
        })
        .buffered(REGISTRATIONS_AT_ONCE)
        .collect()
        .await
}

/// `request` again while it answers 503 (the service gave up on conflicting writes, or the
/// engine refused a transaction), backing off as a client does.
pub(crate) async fn retried<F>(mut request: impl FnMut() -> F) -> (u16, Value)
where
    F: std::future::Future<Output = (u16, Value)>,
{
    let mut attempt = 1;
    loop {
        let (status, body) = request().await;
        if status != 503 || attempt >= 10 {
            return (status, body);
        }
        tokio::time::sleep(Duration::from_millis(20 * attempt)).await;
        attempt += 1;
    }
}

/// `creator`'s new group with every one of `others` a joined member: `POST /v1/groups` with
/// the first invitees, `POST /v1/groups/{id}/members` for the rest, then each invitee's
/// `POST /v1/groups/{id}/join`; checked with `GET /v1/groups/{id}`. The group's id.
pub async fn create_group(
    stack: &Stack,
    creator: &User,
    others: &[&User],
) -> Result<String, String> {
    let ids: Vec<&str> = others.iter().map(|u| u.user_id.as_str()).collect();
    let mut batches = ids.chunks(INVITES_PER_REQUEST);
    let first = batches.next().unwrap_or(&[]);
    let create = json!({"members": first});
    let (status, body) =
        retried(|| post_auth_json(stack, "/v1/groups", &creator.access, &create)).await;
    if status != 201 {
        return Err(format!("POST /v1/groups: {status} {body}"));
    }
    let group_id = body["group_id"]
        .as_str()
        .ok_or_else(|| format!("POST /v1/groups: no group_id in {body}"))?
        .to_string();
    let members = format!("/v1/groups/{group_id}/members");
    for batch in batches {
        let invite = json!({"user_ids": batch});
        let (status, body) =
            retried(|| post_auth_json(stack, &members, &creator.access, &invite)).await;
        if status != 200 {
            return Err(format!("POST {members}: {status} {body}"));
        }
    }
    let join = format!("/v1/groups/{group_id}/join");
    let empty = json!({});
    let joined: Vec<Result<(), String>> = futures::stream::iter(others)
        .map(|u| {
            let (join, empty) = (&join, &empty);
            async move {
                let (status, body) =
                    retried(|| post_auth_json(stack, join, &u.access, empty)).await;
                match status {
                    200 => Ok(()),
                    _ => Err(format!("POST {join}: {status} {body}")),
                }
            }
        })
        .buffer_unordered(JOINS_AT_ONCE)
        .collect()
        .await;
    joined.into_iter().collect::<Result<(), String>>()?;
    let group = format!("/v1/groups/{group_id}");
    let (status, body) = retried(|| get_auth(stack, &group, &creator.access)).await;
    let roster = body["members"].as_array().cloned().unwrap_or_default();
    let joined = roster.iter().filter(|m| m["state"] == "member").count();
    if status != 200 || joined != others.len() + 1 {
        return Err(format!(
            "GET /v1/groups/{group_id}: {status}, {joined} joined of {} ({} in the roster)",
            others.len() + 1,
            roster.len()
        ));
    }
    Ok(group_id)
}

/// The target of a group send from `sender`: every member device in `members` but the
/// sending one, as `{"<user_id>":[{"device_id":…,"registration_id":…},…],…}`.
pub fn target(group_id: &str, members: &[&[Device]], sender: &Device) -> Arc<GroupTarget> {
    let mut fanout = 0;
    let entries: Vec<String> = members
        .iter()
        .filter_map(|devices| {
            let listed: Vec<String> = devices
                .iter()
                .filter(|d| !(d.user_id == sender.user_id && d.device_id == sender.device_id))
                .map(|d| {
                    format!(
                        r#"{{"device_id":{},"registration_id":{}}}"#,
                        d.device_id, d.registration_id
                    )
                })
                .collect();
            fanout += listed.len() as u64;
            let user = &devices.first()?.user_id;
            (!listed.is_empty()).then(|| format!(r#""{user}":[{}]"#, listed.join(",")))
        })
        .collect();
    Arc::new(GroupTarget {
        group_id: group_id.to_string(),
        devices_json: format!("{{{}}}", entries.join(",")),
        fanout,
    })
}

/// Each user's primary device alone, as a member list for [`target`].
pub fn primaries(users: &[User]) -> Vec<Vec<Device>> {
    users.iter().map(|u| vec![Device::primary(u)]).collect()
}

/// Connects each user's device and drains what was sent to it before (16 at a time), so that
/// what arrives next is what a timed send delivers; a user whose drain failed is left out.
pub async fn connect_drained(stack: &Stack, users: &[User]) -> Vec<WsStream> {
    let connected: Vec<Option<WsStream>> = futures::stream::iter(users)
        .map(|u| async move {
            let mut ws = ws::connect(&stack.ws_url(&u.access)).await;
            ws::drain(&mut ws, Duration::from_secs(60)).await.ok()?;
            Some(ws)
        })
        .buffer_unordered(16)
        .collect()
        .await;
    connected.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(user: &str, device_id: u64, registration_id: u64) -> Device {
        Device {
            user_id: user.into(),
            device_id,
            registration_id,
            access: String::new(),
            refresh: String::new(),
        }
    }

    #[test]
    fn the_map_names_every_member_device_but_the_sending_one() {
        let a = [device("a", 1, 1234), device("a", 2, 4321)];
        let b = [device("b", 1, 1234), device("b", 2, 4321)];
        let t = target("g", &[&a, &b], &a[0]);
        assert_eq!(t.fanout, 3);
        let map: Value = serde_json::from_str(&t.devices_json).expect("json");
        assert_eq!(
            map,
            json!({
                "a": [{"device_id": 2, "registration_id": 4321}],
                "b": [{"device_id": 1, "registration_id": 1234},
                      {"device_id": 2, "registration_id": 4321}],
            })
        );
        let alone = target("g", &[&a[..1]], &a[0]);
        assert_eq!((alone.devices_json.as_str(), alone.fanout), ("{}", 0));
    }
}
