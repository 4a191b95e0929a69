//! The group routes over HTTP against the test stack: the roster rules, every error, the
//! version check under real concurrency, paging, account deletion and the change limit.

use futures::future::join_all;
use relay_tests::client::{delete_auth, error_code, status_json, User};
use relay_tests::stack::Stack;
use reqwest::Method;
use serde_json::{json, Value};

/// A request as `user`, with a JSON body when given.
async fn call(
    stack: &Stack,
    user: &User,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = stack
        .http
        .request(method, stack.url(path))
        .bearer_auth(&user.access);
    if let Some(body) = body {
        request = request.json(&body);
    }
    status_json(request.send().await.expect("request")).await
}

/// `POST /v1/groups` inviting `invited`; the new group.
async fn create(stack: &Stack, admin: &User, invited: &[&User]) -> Value {
    let ids: Vec<&str> = invited.iter().map(|u| u.user_id.as_str()).collect();
    let (status, group) = call(
        stack,
        admin,
        Method::POST,
        "/v1/groups",
        Some(json!({"members": ids})),
    )
    .await;
    assert_eq!(status, 201, "{group}");
    group
}

fn gid(group: &Value) -> String {
    group["group_id"].as_str().expect("group_id").to_string()
}

fn version(group: &Value) -> u64 {
    group["version"].as_u64().expect("version")
}

/// The roster as (user id, role, state), in roster order.
fn roster(group: &Value) -> Vec<(String, String, String)> {
    group["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| {
            let f = |k: &str| m[k].as_str().unwrap().to_string();
            (f("user_id"), f("role"), f("state"))
        })
        .collect()
}

fn entry(user: &User, role: &str, state: &str) -> (String, String, String) {
    (user.user_id.clone(), role.into(), state.into())
}

async fn get(stack: &Stack, user: &User, group: &str) -> (u16, Value) {
    call(
        stack,
        user,
        Method::GET,
        &format!("/v1/groups/{group}"),
        None,
    )
    .await
}

async fn invite(stack: &Stack, admin: &User, group: &str, users: &[&User]) -> (u16, Value) {
    let ids: Vec<&str> = users.iter().map(|u| u.user_id.as_str()).collect();
    call(
        stack,
        admin,
        Method::POST,
        &format!("/v1/groups/{group}/members"),
        Some(json!({"user_ids": ids})),
    )
    .await
}

async fn join(stack: &Stack, user: &User, group: &str) -> (u16, Value) {
    call(
        stack,
        user,
        Method::POST,
        &format!("/v1/groups/{group}/join"),
        None,
    )
    .await
}

async fn remove(stack: &Stack, by: &User, group: &str, target: &str) -> (u16, Value) {
    call(
        stack,
        by,
        Method::DELETE,
        &format!("/v1/groups/{group}/members/{target}"),
        None,
    )
    .await
}

async fn set_role(
    stack: &Stack,
    by: &User,
    group: &str,
    target: &User,
    role: &str,
) -> (u16, Value) {
    call(
        stack,
        by,
        Method::PATCH,
        &format!("/v1/groups/{group}/members/{}", target.user_id),
        Some(json!({ "role": role })),
    )
    .await
}

/// Every entry of the user's list, page after page.
async fn list_all(stack: &Stack, user: &User) -> Vec<Value> {
    let mut out = Vec::new();
    let mut path = "/v1/groups".to_string();
    loop {
        let (status, page) = call(stack, user, Method::GET, &path, None).await;
        assert_eq!(status, 200, "{page}");
        out.extend(page["groups"].as_array().unwrap().iter().cloned());
        match page["next"].as_str() {
            Some(next) => path = format!("/v1/groups?after={next}"),
            None => return out,
        }
    }
}

async fn users(stack: &Stack, n: usize) -> Vec<User> {
    join_all((0..n).map(|_| User::builder(stack).attempts(5).create())).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invitees_see_the_group_join_it_and_outsiders_find_nothing() {
    let stack = Stack::start().await;
    let [alice, bob, carol, dave] = <[User; 4]>::try_from(users(&stack, 4).await).ok().unwrap();
    let g = create(&stack, &alice, &[&bob, &carol]).await;
    let id = gid(&g);
    assert_eq!(version(&g), 1);
    assert_eq!(g["meta"], Value::Null);
    assert!(g["created_at"].as_u64().unwrap() > 0);
    assert_eq!(
        roster(&g),
        [
            entry(&alice, "admin", "member"),
            entry(&bob, "member", "invited"),
            entry(&carol, "member", "invited"),
        ]
    );
    // An invitee reads it; an outsider cannot tell it exists.
    let (s, seen) = get(&stack, &bob, &id).await;
    assert_eq!((s, &seen), (200, &g));
    let (s, body) = get(&stack, &dave, &id).await;
    assert_eq!((s, error_code(&body)), (404, "group_not_found"));
    let (s, body) = get(&stack, &dave, &uuid::Uuid::new_v4().to_string()).await;
    assert_eq!((s, error_code(&body)), (404, "group_not_found"));
    let (s, body) = get(&stack, &dave, "not-a-uuid").await;
    assert_eq!((s, error_code(&body)), (404, "group_not_found"));
    let (s, body) = join(&stack, &dave, &id).await;
    assert_eq!((s, error_code(&body)), (404, "group_not_found"));
    assert_eq!(
        list_all(&stack, &bob).await,
        [json!({"group_id": id, "role": "member", "state": "invited"})]
    );

    // Bob joins; joining again changes nothing.
    let (s, joined) = join(&stack, &bob, &id).await;
    assert_eq!(s, 200, "{joined}");
    assert_eq!(version(&joined), 2);
    assert_eq!(roster(&joined)[1], entry(&bob, "member", "member"));
    let (s, again) = join(&stack, &bob, &id).await;
    assert_eq!((s, &again), (200, &joined));
    assert_eq!(
        list_all(&stack, &bob).await,
        [json!({"group_id": id, "role": "member", "state": "member"})]
    );

    // Users already in the roster are ignored; only Dave is new.
    let (s, invited) = invite(&stack, &alice, &id, &[&bob, &dave, &carol]).await;
    assert_eq!(s, 200, "{invited}");
    assert_eq!(version(&invited), 3);
    assert_eq!(roster(&invited)[3], entry(&dave, "member", "invited"));
    let (s, same) = invite(&stack, &alice, &id, &[&dave]).await;
    assert_eq!((s, &same), (200, &invited));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_refusal_has_its_code() {
    let stack = Stack::start().await;
    let [alice, bob, carol] = <[User; 3]>::try_from(users(&stack, 3).await).ok().unwrap();
    let nobody = uuid::Uuid::new_v4().to_string();
    let post = |body: Value| call(&stack, &alice, Method::POST, "/v1/groups", Some(body));

    let (s, b) = post(json!({"members": [nobody]})).await;
    assert_eq!((s, error_code(&b)), (404, "user_not_found"));
    let (s, b) = post(json!({"members": [alice.user_id]})).await;
    assert_eq!((s, error_code(&b)), (400, "invalid_request"));
    let (s, b) = post(json!({"members": [bob.user_id, bob.user_id]})).await;
    assert_eq!((s, error_code(&b)), (400, "invalid_request"));
    let many: Vec<String> = (0..99).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    let (s, b) = post(json!({ "members": many })).await;
    assert_eq!((s, error_code(&b)), (400, "invalid_request"));
    let (s, b) = post(json!({"members": ["not-a-uuid"]})).await;
    assert_eq!((s, error_code(&b)), (400, "invalid_request"));
    let (s, b) = post(json!({"members": [], "meta": "%%%"})).await;
    assert_eq!((s, error_code(&b)), (400, "invalid_request"));
    let big = shared::validation::encode(&vec![7u8; 4097]);
    let (s, b) = post(json!({"members": [], "meta": big})).await;
    assert_eq!((s, error_code(&b)), (400, "invalid_request"));
    let fits = shared::validation::encode(&[7u8; 4096]);
    let (s, g) = post(json!({"members": [bob.user_id], "meta": fits})).await;
    assert_eq!(s, 201, "{g}");
    assert_eq!(g["meta"], json!(fits));
    let id = gid(&g);

    // Bob, an invitee, and once joined a plain member, may not administer.
    for _ in 0..2 {
        let (s, b) = invite(&stack, &bob, &id, &[&carol]).await;
        assert_eq!((s, error_code(&b)), (403, "not_an_admin"));
        let (s, b) = set_role(&stack, &bob, &id, &bob, "admin").await;
        assert_eq!((s, error_code(&b)), (403, "not_an_admin"));
        let meta = json!({"meta": null});
        let path = format!("/v1/groups/{id}/meta");
        let (s, b) = call(&stack, &bob, Method::PUT, &path, Some(meta)).await;
        assert_eq!((s, error_code(&b)), (403, "not_an_admin"));
        let (s, b) = remove(&stack, &bob, &id, &alice.user_id).await;
        assert_eq!((s, error_code(&b)), (403, "not_an_admin"));
        assert_eq!(join(&stack, &bob, &id).await.0, 200);
    }
    // Carol, outside the roster, learns nothing.
    let (s, b) = invite(&stack, &carol, &id, &[&carol]).await;
    assert_eq!((s, error_code(&b)), (404, "group_not_found"));
    let (s, b) = remove(&stack, &carol, &id, &carol.user_id).await;
    assert_eq!((s, error_code(&b)), (404, "group_not_found"));

    let (s, b) = invite(&stack, &alice, &id, &[]).await;
    assert_eq!((s, error_code(&b)), (400, "invalid_request"));
    let path = format!("/v1/groups/{id}/members");
    let (s, b) = call(
        &stack,
        &alice,
        Method::POST,
        &path,
        Some(json!({"user_ids": [nobody]})),
    )
    .await;
    assert_eq!((s, error_code(&b)), (404, "user_not_found"));
    let (s, b) = remove(&stack, &alice, &id, &carol.user_id).await;
    assert_eq!((s, error_code(&b)), (404, "user_not_found"));
    let (s, b) = set_role(&stack, &alice, &id, &carol, "admin").await;
    assert_eq!((s, error_code(&b)), (404, "user_not_found"));
    let (s, b) = set_role(&stack, &alice, &id, &alice, "member").await;
    assert_eq!((s, error_code(&b)), (400, "invalid_request"));
    assert!(
        b["error"]["message"].as_str().unwrap().contains("admin"),
        "{b}"
    );
    let (s, b) = set_role(&stack, &alice, &id, &bob, "owner").await;
    assert_eq!((s, error_code(&b)), (400, "invalid_request"));
    let target = format!("/v1/groups/{id}/members/{}?if_version=x", bob.user_id);
    let (s, b) = call(&stack, &alice, Method::DELETE, &target, None).await;
    assert_eq!((s, error_code(&b)), (400, "invalid_request"));
    let (s, b) = call(&stack, &alice, Method::GET, "/v1/groups?after=x", None).await;
    assert_eq!((s, error_code(&b)), (400, "invalid_request"));

    // Nothing above changed the group but Bob's join.
    let (_, now) = get(&stack, &alice, &id).await;
    assert_eq!(version(&now), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_roster_is_capped_invitees_included() {
    let stack = Stack::with_env(&[("GROUP_MAX_MEMBERS", "3")]).await;
    let [alice, bob, carol, dave] = <[User; 4]>::try_from(users(&stack, 4).await).ok().unwrap();
    let ids = json!({"members": [bob.user_id, carol.user_id, dave.user_id]});
    let (s, b) = call(&stack, &alice, Method::POST, "/v1/groups", Some(ids)).await;
    assert_eq!((s, error_code(&b)), (409, "group_full"));
    let g = create(&stack, &alice, &[&bob, &carol]).await;
    let (s, b) = invite(&stack, &alice, &gid(&g), &[&dave]).await;
    assert_eq!((s, error_code(&b)), (409, "group_full"));
    // A decline makes room.
    assert_eq!(
        remove(&stack, &carol, &gid(&g), &carol.user_id).await.0,
        200
    );
    let (s, b) = invite(&stack, &alice, &gid(&g), &[&dave]).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(roster(&b).len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaving_promotes_the_longest_standing_member_and_the_last_one_out_deletes() {
    let stack = Stack::start().await;
    let [alice, bob, carol, dave] = <[User; 4]>::try_from(users(&stack, 4).await).ok().unwrap();
    let g = create(&stack, &alice, &[&carol, &bob, &dave]).await;
    let id = gid(&g);
    // Bob joins before Carol: he has stood longer, though listed after her.
    assert_eq!(join(&stack, &bob, &id).await.0, 200);
    assert_eq!(join(&stack, &carol, &id).await.0, 200);
    let (s, left) = remove(&stack, &alice, &id, &alice.user_id).await;
    assert_eq!(s, 200, "{left}");
    assert_eq!(
        roster(&left),
        [
            entry(&carol, "member", "member"),
            entry(&bob, "admin", "member"),
            entry(&dave, "member", "invited"),
        ]
    );
    let (s, b) = get(&stack, &alice, &id).await;
    assert_eq!((s, error_code(&b)), (404, "group_not_found"));
    assert!(list_all(&stack, &alice).await.is_empty());

    // The new admin removes Carol; then he leaves, the last joined member: the group goes,
    // Dave's invitation with it.
    let (s, removed) = remove(&stack, &bob, &id, &carol.user_id).await;
    assert_eq!(s, 200, "{removed}");
    assert_eq!(roster(&removed).len(), 2);
    let (s, gone) = remove(&stack, &bob, &id, &bob.user_id).await;
    assert_eq!(s, 200, "{gone}");
    assert_eq!(version(&gone), version(&removed) + 1);
    assert_eq!(gone["members"], json!([]));
    for user in [&bob, &dave] {
        let (s, b) = get(&stack, user, &id).await;
        assert_eq!((s, error_code(&b)), (404, "group_not_found"));
        assert!(list_all(&stack, user).await.is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_set_roles_and_meta() {
    let stack = Stack::start().await;
    let [alice, bob] = <[User; 2]>::try_from(users(&stack, 2).await).ok().unwrap();
    let g = create(&stack, &alice, &[&bob]).await;
    let id = gid(&g);
    assert_eq!(join(&stack, &bob, &id).await.0, 200);
    let (s, promoted) = set_role(&stack, &alice, &id, &bob, "admin").await;
    assert_eq!(s, 200, "{promoted}");
    assert_eq!(roster(&promoted)[1], entry(&bob, "admin", "member"));
    assert_eq!(
        list_all(&stack, &bob).await,
        [json!({"group_id": id, "role": "admin", "state": "member"})]
    );
    // With two admins, Alice may step down; then Bob is the only one.
    let (s, stepped) = set_role(&stack, &alice, &id, &alice, "member").await;
    assert_eq!(s, 200, "{stepped}");
    let (s, b) = set_role(&stack, &bob, &id, &bob, "member").await;
    assert_eq!((s, error_code(&b)), (400, "invalid_request"));

    let path = format!("/v1/groups/{id}/meta");
    let (s, set) = call(
        &stack,
        &bob,
        Method::PUT,
        &path,
        Some(json!({"meta": "bmFtZQ=="})),
    )
    .await;
    assert_eq!(s, 200, "{set}");
    assert_eq!(set["meta"], "bmFtZQ==");
    assert_eq!(version(&set), version(&stepped) + 1);
    let (_, read) = get(&stack, &alice, &id).await;
    assert_eq!(read, set);
    let (s, cleared) = call(
        &stack,
        &bob,
        Method::PUT,
        &path,
        Some(json!({"meta": null})),
    )
    .await;
    assert_eq!(s, 200, "{cleared}");
    assert_eq!(cleared["meta"], Value::Null);
    assert_eq!(version(&cleared), version(&set) + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_list_pages_by_group_id_and_account_deletion_leaves_every_page() {
    let stack = Stack::start().await;
    let alice = User::builder(&stack).create().await;
    let mut made: Vec<String> = Vec::new();
    for _ in 0..103 {
        made.push(gid(&create(&stack, &alice, &[]).await));
    }
    made.sort();
    let (s, first) = call(&stack, &alice, Method::GET, "/v1/groups", None).await;
    assert_eq!(s, 200);
    assert_eq!(first["groups"].as_array().unwrap().len(), 100);
    assert_eq!(first["next"], json!(made[99]));
    let listed: Vec<String> = list_all(&stack, &alice)
        .await
        .iter()
        .map(|e| {
            assert_eq!(
                (&e["role"], &e["state"]),
                (&json!("admin"), &json!("member"))
            );
            e["group_id"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(listed, made);

    // Deleting the account leaves them all, page after page: each group had only Alice.
    assert_eq!(
        delete_auth(&stack, "/v1/users/me", &alice.access).await,
        204
    );
    assert!(stack.items("groups").await.is_empty());
}

/// Ten invites at one `if_version`, all in flight at once: one is written, nine are refused with
/// the group as it is after the winner.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_changes_at_one_version_let_exactly_one_through() {
    let stack = Stack::start().await;
    let alice = User::builder(&stack).create().await;
    let invitees = users(&stack, 10).await;
    let g = create(&stack, &alice, &[]).await;
    let id = gid(&g);
    let path = format!("/v1/groups/{id}/members");
    let answers = join_all(invitees.iter().map(|u| {
        let body = json!({"user_ids": [u.user_id], "if_version": 1});
        call(&stack, &alice, Method::POST, &path, Some(body))
    }))
    .await;
    let won: Vec<&Value> = answers
        .iter()
        .filter(|(s, _)| *s == 200)
        .map(|(_, b)| b)
        .collect();
    assert_eq!(won.len(), 1, "{answers:?}");
    let (_, now) = get(&stack, &alice, &id).await;
    assert_eq!(won[0], &now);
    assert_eq!(version(&now), 2);
    assert_eq!(roster(&now).len(), 2);
    for (s, b) in answers.iter().filter(|(s, _)| *s != 200) {
        assert_eq!((*s, error_code(b)), (409, "version_conflict"));
        assert_eq!(b["error"]["group"], now);
    }
    // The refused invitees are not in anyone's list.
    let mut listed = 0;
    for u in &invitees {
        listed += list_all(&stack, u).await.len();
    }
    assert_eq!(listed, 1);
}

/// Ten invites without `if_version`, all in flight at once: each is retried until written.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_changes_without_a_version_all_apply() {
    let stack = Stack::start().await;
    let alice = User::builder(&stack).create().await;
    let invitees = users(&stack, 10).await;
    let g = create(&stack, &alice, &[]).await;
    let id = gid(&g);
    let answers = join_all(
        invitees
            .iter()
            .map(|u| async { invite(&stack, &alice, &id, &[u]).await }),
    )
    .await;
    for (s, b) in &answers {
        assert_eq!(*s, 200, "{b}");
    }
    let (_, now) = get(&stack, &alice, &id).await;
    assert_eq!(version(&now), 11);
    assert_eq!(roster(&now).len(), 11);
    for u in &invitees {
        assert_eq!(list_all(&stack, u).await.len(), 1);
    }
    // A stale `if_version` on a removal is refused with the current group.
    let target = format!(
        "/v1/groups/{id}/members/{}?if_version=1",
        invitees[0].user_id
    );
    let (s, b) = call(&stack, &alice, Method::DELETE, &target, None).await;
    assert_eq!((s, error_code(&b)), (409, "version_conflict"));
    assert_eq!(b["error"]["group"], now);
    let target = format!(
        "/v1/groups/{id}/members/{}?if_version=11",
        invitees[0].user_id
    );
    let (s, b) = call(&stack, &alice, Method::DELETE, &target, None).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(version(&b), 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_account_leaves_every_group() {
    let stack = Stack::start().await;
    let [alice, bob, carol] = <[User; 3]>::try_from(users(&stack, 3).await).ok().unwrap();
    // Alice admin with Bob joined; Alice alone with Carol invited; Alice invited by Bob.
    let shared_group = gid(&create(&stack, &alice, &[&bob]).await);
    assert_eq!(join(&stack, &bob, &shared_group).await.0, 200);
    let alone = gid(&create(&stack, &alice, &[&carol]).await);
    let invited_to = gid(&create(&stack, &bob, &[&alice]).await);

    assert_eq!(
        delete_auth(&stack, "/v1/users/me", &alice.access).await,
        204
    );

    let (s, g) = get(&stack, &bob, &shared_group).await;
    assert_eq!(s, 200, "{g}");
    assert_eq!(roster(&g), [entry(&bob, "admin", "member")]);
    let (s, g) = get(&stack, &bob, &invited_to).await;
    assert_eq!(s, 200, "{g}");
    assert_eq!(roster(&g), [entry(&bob, "admin", "member")]);
    let (s, b) = get(&stack, &carol, &alone).await;
    assert_eq!((s, error_code(&b)), (404, "group_not_found"));
    assert!(list_all(&stack, &carol).await.is_empty());
    let alice_id = alice.user_id.as_str();
    let left: Vec<_> = stack
        .items("groups")
        .await
        .into_iter()
        .filter(|i| format!("{i:?}").contains(alice_id))
        .collect();
    assert!(left.is_empty(), "items naming the deleted user: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_changes_are_limited_per_user() {
    let stack = Stack::with_env(&[("RATE_LIMIT_GROUP_CHANGES", "3/3600")]).await;
    let [alice, bob] = <[User; 2]>::try_from(users(&stack, 2).await).ok().unwrap();
    let id = gid(&create(&stack, &alice, &[&bob]).await);
    assert_eq!(invite(&stack, &alice, &id, &[&bob]).await.0, 200);
    assert_eq!(set_role(&stack, &alice, &id, &alice, "admin").await.0, 200);
    let r = stack
        .http
        .post(stack.url("/v1/groups"))
        .bearer_auth(&alice.access)
        .json(&json!({"members": []}))
        .send()
        .await
        .unwrap();
    relay_tests::client::assert_rate_limited(r, 3600).await;
    // Another user's budget is their own; reads are counted apart.
    assert_eq!(join(&stack, &bob, &id).await.0, 200);
    assert_eq!(get(&stack, &alice, &id).await.0, 200);
}
