//! Groups made over HTTP, as an app makes them, for the suites that send to one.

use serde_json::json;
use uuid::Uuid;

use crate::client::post_auth_json;
use crate::{Stack, User};

/// A new group: the first of `members` creates it and invites the others and `invited`; the
/// other members join, `invited` stay invited. Returns its id.
pub async fn group_over_http(stack: &Stack, members: &[&User], invited: &[&User]) -> Uuid {
    let listed: Vec<&str> = members[1..]
        .iter()
        .chain(invited)
        .map(|u| u.user_id.as_str())
        .collect();
    let (status, body) = post_auth_json(
        stack,
        "/v1/groups",
        &members[0].access,
        &json!({ "members": listed }),
    )
    .await;
    assert_eq!(status, 201, "create: {body}");
    let id = Uuid::parse_str(body["group_id"].as_str().expect("group_id")).expect("a UUID");
    for member in &members[1..] {
        let path = format!("/v1/groups/{id}/join");
        let (status, body) = post_auth_json(stack, &path, &member.access, &json!({})).await;
        assert_eq!(status, 200, "join: {body}");
    }
    id
}
