//! Scenario 9, MLS groups: a 1,500-member MLS group built by the bench's own mls-rs clients
//! (accounts, KeyPackages, the group created and started, members added 80 per Commit), then
//! timed: the server's acceptance of Commits removing and adding one user each (beside the
//! relay's own MLS processing of the same Commits in-process, its floor), the Welcome sizes, and
//! application messages fanned out to 300 connected members.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use futures::{SinkExt, StreamExt};
use relay_tests::client::{get_auth, post_auth_json, put_auth};
use relay_tests::{Stack, User};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use shared::groups::GroupId;
use shared::mls::testing::{Committed, TestMember};
use shared::mls::{self, Tracked};
use shared::model::DeviceAddress;
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message;

use super::group_setup::{self, accounts, retried, INVITES_PER_REQUEST};
use super::groups::counts;
use super::util::{log, Lat};
use super::ws::{self, WsStream, BODY_BYTES};

/// The most users one Commit may add and remove (each is an index item in the Commit's
/// DynamoDB transaction).
pub const USERS_PER_COMMIT: usize = 80;

/// Requests of the preparation at once (KeyPackage uploads and claims).
const AT_ONCE: usize = 16;

#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Members of the group, its creator (the committer and sender) included; one device each.
    pub members: usize,
    /// Timed Commits of each kind (removing one member; adding one user).
    pub commits: usize,
    /// Members connected for the application messages.
    pub online: usize,
    /// Untimed application messages first.
    pub warmup_sends: usize,
    /// Timed application messages, one at a time.
    pub sends: usize,
}

impl Plan {
    pub fn new(quick: bool) -> Self {
        if quick {
            Self {
                members: 50,
                commits: 3,
                online: 10,
                warmup_sends: 1,
                sends: 5,
            }
        } else {
            Self {
                members: 1500,
                commits: 20,
                online: 300,
                warmup_sends: 3,
                sends: 30,
            }
        }
    }
}

/// Timed Commits of one kind: HTTP request → 200, beside the relay's MLS work on the same
/// Commits in-process.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct CommitRun {
    /// `POST /v1/groups/{id}/mls/commits` → 200.
    pub accept: Lat,
    /// `apply_commit` and `check_group_info` (and `export_tree` with a Welcome) on the same
    /// state and Commit, in this process: what the relay must compute, without storage or
    /// notices.
    pub floor: Lat,
    /// The committer's client building the Commit (mls-rs), for scale.
    pub client: Lat,
    /// Mean sizes of what was uploaded.
    pub commit_bytes: f64,
    pub group_info_bytes: f64,
    /// Mean size of the Welcomes (adds only).
    #[serde(default)]
    pub welcome_bytes: Option<f64>,
    pub errors: u64,
    pub first_error: Option<String>,
}

/// Application messages to the group with `online` members connected, one at a time, each timed
/// until every online device has read it.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct MlsOnline {
    pub online: usize,
    pub sends: usize,
    /// Bytes of the PrivateMessage each send carries (plaintext `BODY_BYTES`).
    pub body_bytes: usize,
    pub all_received: Lat,
    pub each_received: Lat,
    pub sent: Lat,
    pub missed: u64,
    pub delivered: u64,
    pub queued: u64,
    pub dropped: u64,
    pub errors: u64,
    pub first_error: Option<String>,
}

/// Scenario 9 on the single node.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct MlsGroups {
    pub members: usize,
    /// Preparation: registrations, KeyPackages, creation and the add Commits.
    pub setup_s: f64,
    /// The Welcome of the largest add of the preparation: its users and bytes, and the members
    /// the group had after it.
    pub batch_users: usize,
    pub batch_welcome_bytes: Option<usize>,
    pub batch_commit_bytes: Option<usize>,
    pub batch_members: usize,
    /// The tracked state (mls-rs ExternalSnapshot) and the exported tree at full size.
    pub state_bytes: usize,
    pub tree_bytes: usize,
    pub removes: Option<CommitRun>,
    pub adds: Option<CommitRun>,
    pub online: Option<MlsOnline>,
    /// Why a part did not run (a request refused), when one did not.
    pub error: Option<String>,
}

fn b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

fn device(u: &User) -> Result<DeviceAddress, String> {
    let id = u.user_id.parse().map_err(|e| format!("user id: {e}"))?;
    Ok(DeviceAddress::primary(id))
}

/// Each user uploads one KeyPackage of its one device, made by a client of its own (the
/// private keys are dropped: these members never join, the server needs none of them).
async fn upload_key_packages(stack: &Stack, users: &[User]) -> Result<(), String> {
    let done: Vec<Result<(), String>> = futures::stream::iter(users)
        .map(|u| async move {
            let kp = TestMember::new(device(u)?).key_package();
            let body = json!({"key_packages": [b64(&kp)]});
            let (status, reply) = put_auth(stack, "/v1/mls/key_packages", &u.access, &body).await;
            match status {
                200 => Ok(()),
                _ => Err(format!("PUT /v1/mls/key_packages: {status} {reply}")),
            }
        })
        .buffer_unordered(AT_ONCE)
        .collect()
        .await;
    done.into_iter().collect()
}

/// One KeyPackage of each user's one device, as the creator claims them.
async fn claim(stack: &Stack, creator: &User, users: &[&User]) -> Result<Vec<Vec<u8>>, String> {
    let got: Vec<Result<Vec<u8>, String>> = futures::stream::iter(users)
        .map(|u| async move {
            let path = format!("/v1/users/{}/mls/key_packages", u.user_id);
            let (status, body) = retried(|| get_auth(stack, &path, &creator.access)).await;
            let kp = body["key_packages"][0]["key_package"].as_str();
            match (status, kp) {
                (200, Some(kp)) => STANDARD.decode(kp).map_err(|e| e.to_string()),
                _ => Err(format!("GET {path}: {status} {body}")),
            }
        })
        .buffered(AT_ONCE)
        .collect()
        .await;
    got.into_iter().collect()
}

/// Submits the creator's Commit; the time from the request to its 200. A refused Commit is
/// discarded from the creator's state, so the next one starts from the epoch the server has.
async fn submit(
    stack: &Stack,
    creator: &User,
    member: &mut TestMember,
    group_id: GroupId,
    c: &Committed,
    adds: &[&User],
    removes: &[&User],
) -> (Duration, Result<(), String>) {
    let mut body = json!({
        "commit": b64(&c.commit),
        "group_info": b64(&c.group_info),
        "adds": adds.iter().map(|u| u.user_id.as_str()).collect::<Vec<_>>(),
        "removes": removes.iter().map(|u| u.user_id.as_str()).collect::<Vec<_>>(),
    });
    if let Some(w) = &c.welcome {
        body["welcome"] = Value::String(b64(w));
    }
    let path = format!("/v1/groups/{group_id}/mls/commits");
    let t = Instant::now();
    let (status, reply) = post_auth_json(stack, &path, &creator.access, &body).await;
    let took = t.elapsed();
    if status == 200 && reply["epoch"].as_u64() == Some(member.epoch()) {
        return (took, Ok(()));
    }
    member.discard_commit();
    let reply: String = reply.to_string().chars().take(300).collect();
    (took, Err(format!("POST {path}: {status} {reply}")))
}

/// The relay's own MLS work on a Commit, timed in-process: what `POST …/mls/commits` computes
/// before it writes anything. The state after it, for the next Commit.
fn floor(
    tracked: &Tracked,
    group_id: GroupId,
    c: &Committed,
) -> Result<(Duration, Tracked), String> {
    let t = Instant::now();
    let applied = mls::apply_commit(&tracked.state, group_id, &c.commit)
        .map_err(|e| format!("apply_commit in-process: {e}"))?;
    mls::check_group_info(&applied.tracked, group_id, &c.group_info)
        .map_err(|e| format!("check_group_info in-process: {e}"))?;
    if c.welcome.is_some() {
        mls::export_tree(&applied.tracked.state)
            .map_err(|e| format!("export_tree in-process: {e}"))?;
    }
    Ok((t.elapsed(), applied.tracked))
}

/// The group, prepared: its id, its members in roster order (the creator first), the
/// creator's client (the only one holding the group), and users registered for the timed adds.
struct Prepared {
    group_id: GroupId,
    members: Vec<User>,
    creator: TestMember,
    fresh: Vec<User>,
}

async fn prepare(stack: &Stack, plan: &Plan, out: &mut MlsGroups) -> Result<Prepared, String> {
    let t = Instant::now();
    log(format!(
        "9 · mls: registering {} users (+{} for the timed adds), one KeyPackage each",
        plan.members, plan.commits
    ));
    let mut members = accounts(stack, plan.members + plan.commits).await;
    let fresh = members.split_off(plan.members);
    upload_key_packages(stack, &members).await?;
    upload_key_packages(stack, &fresh).await?;

    let creator_user = &members[0];
    let others: Vec<&User> = members[1..].iter().collect();
    let ids: Vec<&str> = others.iter().map(|u| u.user_id.as_str()).collect();
    let mut batches = ids.chunks(INVITES_PER_REQUEST);
    let create = json!({"members": batches.next().unwrap_or(&[]), "protocol": "mls"});
    let (status, body) =
        retried(|| post_auth_json(stack, "/v1/groups", &creator_user.access, &create)).await;
    if status != 201 {
        return Err(format!("POST /v1/groups: {status} {body}"));
    }
    let group_id: GroupId = body["group_id"]
        .as_str()
        .and_then(|g| g.parse().ok())
        .ok_or_else(|| format!("POST /v1/groups: no group_id in {body}"))?;
    let invite_path = format!("/v1/groups/{group_id}/members");
    for batch in batches {
        let invite = json!({"user_ids": batch});
        let (status, body) =
            retried(|| post_auth_json(stack, &invite_path, &creator_user.access, &invite)).await;
        if status != 200 {
            return Err(format!("POST {invite_path}: {status} {body}"));
        }
    }

    let mut creator = TestMember::new(device(creator_user)?);
    let group_info = creator.create_group(group_id);
    let init = json!({
        "group_info": b64(&group_info),
        "ratchet_tree": b64(&creator.export_tree()),
    });
    let init_path = format!("/v1/groups/{group_id}/mls/init");
    let (status, body) =
        retried(|| post_auth_json(stack, &init_path, &creator_user.access, &init)).await;
    if status != 200 {
        return Err(format!("POST {init_path}: {status} {body}"));
    }

    log(format!(
        "9 · mls: adding {} members, {USERS_PER_COMMIT} per Commit",
        others.len()
    ));
    for batch in others.chunks(USERS_PER_COMMIT) {
        let kps = claim(stack, creator_user, batch).await?;
        let c = creator.add(&kps);
        let (_, done) = submit(stack, creator_user, &mut creator, group_id, &c, batch, &[]).await;
        done?;
        if batch.len() >= out.batch_users {
            out.batch_users = batch.len();
            out.batch_welcome_bytes = c.welcome.as_ref().map(Vec::len);
            out.batch_commit_bytes = Some(c.commit.len());
            out.batch_members = creator.devices().len();
        }
    }
    out.setup_s = t.elapsed().as_secs_f64();
    log(format!(
        "9 · mls: {} members in the tree at epoch {} after {:.1} s",
        creator.devices().len(),
        creator.epoch(),
        out.setup_s
    ));
    Ok(Prepared {
        group_id,
        members,
        creator,
        fresh,
    })
}

/// The sizes and times of timed Commits.
#[derive(Default)]
struct Times {
    accept: Vec<Duration>,
    floor: Vec<Duration>,
    client: Vec<Duration>,
    commit: Vec<usize>,
    group_info: Vec<usize>,
    welcome: Vec<usize>,
    errors: u64,
    first_error: Option<String>,
}

impl Times {
    fn run(self) -> CommitRun {
        let mean = |v: &[usize]| v.iter().sum::<usize>() as f64 / v.len().max(1) as f64;
        CommitRun {
            accept: Lat::from_durations(&self.accept),
            floor: Lat::from_durations(&self.floor),
            client: Lat::from_durations(&self.client),
            commit_bytes: mean(&self.commit),
            group_info_bytes: mean(&self.group_info),
            welcome_bytes: (!self.welcome.is_empty()).then(|| mean(&self.welcome)),
            errors: self.errors,
            first_error: self.first_error,
        }
    }

    /// One Commit: built by the creator's client, submitted (timed), then applied in-process to
    /// `tracked` (timed, the floor).
    async fn commit(
        &mut self,
        stack: &Stack,
        p: &mut Prepared,
        tracked: &mut Tracked,
        adds: &[&User],
        kps: &[Vec<u8>],
        removes: &[&User],
    ) {
        let devices: Vec<DeviceAddress> = removes.iter().filter_map(|u| device(u).ok()).collect();
        let t = Instant::now();
        let c = p.creator.commit(kps, &devices);
        self.client.push(t.elapsed());
        let creator = &p.members[0];
        let (took, done) = submit(
            stack,
            creator,
            &mut p.creator,
            p.group_id,
            &c,
            adds,
            removes,
        )
        .await;
        if let Err(e) = done {
            self.errors += 1;
            self.first_error.get_or_insert(e);
            return;
        }
        self.accept.push(took);
        match floor(tracked, p.group_id, &c) {
            Ok((f, next)) => {
                self.floor.push(f);
                *tracked = next;
            }
            // The server took a Commit the relay's own code refuses in-process: a finding.
            Err(e) => {
                self.errors += 1;
                self.first_error.get_or_insert(e);
            }
        }
        self.commit.push(c.commit.len());
        self.group_info.push(c.group_info.len());
        self.welcome.extend(c.welcome.as_ref().map(Vec::len));
    }
}

/// The timed Commits: `plan.commits` removing one member each (the last ones of the roster,
/// never connected later), then as many adding one fresh user each (invited first), so the
/// group stays at about its full size.
async fn commits(
    stack: &Stack,
    p: &mut Prepared,
    plan: &Plan,
    out: &mut MlsGroups,
) -> Result<(), String> {
    let mut tracked = mls::observe(
        p.group_id,
        &p.creator.group_info(),
        Some(&p.creator.export_tree()),
    )
    .map_err(|e| format!("observe in-process: {e}"))?;
    out.state_bytes = tracked.state.len();
    out.tree_bytes = p.creator.export_tree().len();
    let n = plan
        .commits
        .min(p.members.len().saturating_sub(plan.online + 1));
    log(format!(
        "9 · mls: {n} Commits removing one member each, at {} members",
        p.members.len()
    ));
    let leaving: Vec<User> = p.members.split_off(p.members.len() - n);
    let mut removes = Times::default();
    for u in &leaving {
        removes.commit(stack, p, &mut tracked, &[], &[], &[u]).await;
    }
    out.removes = Some(removes.run());

    let fresh = std::mem::take(&mut p.fresh);
    let creator = &p.members[0];
    let ids: Vec<&str> = fresh.iter().map(|u| u.user_id.as_str()).collect();
    let invite_path = format!("/v1/groups/{}/members", p.group_id);
    let invite = json!({"user_ids": ids});
    let (status, body) =
        retried(|| post_auth_json(stack, &invite_path, &creator.access, &invite)).await;
    if status != 200 {
        return Err(format!("POST {invite_path}: {status} {body}"));
    }
    let refs: Vec<&User> = fresh.iter().collect();
    let kps = claim(stack, creator, &refs).await?;
    log(format!(
        "9 · mls: {} Commits adding one user each",
        fresh.len()
    ));
    let mut adds = Times::default();
    for (u, kp) in fresh.iter().zip(&kps) {
        adds.commit(stack, p, &mut tracked, &[u], std::slice::from_ref(kp), &[])
            .await;
    }
    out.adds = Some(adds.run());
    p.members.extend(fresh);
    Ok(())
}

/// A body's identity as a receiver sees it (the receivers cannot decrypt: they never joined).
fn fingerprint(bytes: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// What an online member's connection read: (fingerprint of each body, ns since `base`), sent
/// on `to` until `stop`.
async fn receive(
    mut ws: WsStream,
    base: Instant,
    to: mpsc::UnboundedSender<(u64, u64)>,
    mut stop: watch::Receiver<bool>,
) {
    const KEY: &str = r#""body":""#;
    loop {
        let msg = tokio::select! {
            _ = stop.changed() => break,
            msg = ws.next() => msg,
        };
        match msg {
            Some(Ok(Message::Text(t))) => {
                let now = ws::ns_since(base);
                let t = t.as_str();
                for (at, _) in t.match_indices(KEY) {
                    let rest = &t[at + KEY.len()..];
                    let Some(end) = rest.find('"') else { continue };
                    if let Ok(bytes) = STANDARD.decode(&rest[..end]) {
                        let _ = to.send((fingerprint(&bytes), now));
                    }
                }
            }
            Some(Ok(_)) => {}
            _ => break,
        }
    }
    let _ = ws.close(None).await;
}

/// One send on `ws`: the time to its `sent` reply and the reply.
async fn send_once(ws: &mut WsStream, frame: String) -> (Duration, Result<String, String>) {
    let t = Instant::now();
    if let Err(e) = ws.send(Message::Text(frame.into())).await {
        return (t.elapsed(), Err(format!("socket: {e}")));
    }
    loop {
        match tokio::time::timeout(Duration::from_secs(30), ws.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => {
                let text = text.as_str();
                if text.contains(r#""type":"sent""#) {
                    return (t.elapsed(), Ok(text.to_string()));
                }
                if text.contains(r#""type":"error""#) {
                    return (t.elapsed(), Err(text.chars().take(300).collect()));
                }
            }
            Ok(Some(Ok(_))) => {}
            Ok(_) => return (t.elapsed(), Err("socket closed".into())),
            Err(_) => return (t.elapsed(), Err("no reply within 30 s".into())),
        }
    }
}

/// `plan.online` members connected (their inboxes, the Commits' notices, drained first); the
/// creator sends application messages one at a time, each timed until every online device has
/// read it.
async fn online(stack: &Stack, p: &mut Prepared, plan: &Plan) -> MlsOnline {
    let n = plan.online.min(p.members.len() - 1);
    let mut out = MlsOnline {
        sends: plan.sends,
        ..Default::default()
    };
    log(format!(
        "9 · mls: connecting {n} members (each fetches the Commits' notices first)"
    ));
    let base = Instant::now();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = watch::channel(false);
    // A member whose drain failed is left out of the receipts awaited.
    let mut n = 0;
    for ws in group_setup::connect_drained(stack, &p.members[1..=n]).await {
        tokio::spawn(receive(ws, base, tx.clone(), stop_rx.clone()));
        n += 1;
    }
    out.online = n;
    let mut ws = ws::connect(&stack.ws_url(&p.members[0].access)).await;
    log(format!(
        "9 · mls: {} application messages, {n} members online",
        plan.sends
    ));
    let (mut all, mut each, mut sent) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..(plan.warmup_sends + plan.sends) as u64 {
        let mut plaintext = [0u8; BODY_BYTES];
        plaintext[..8].copy_from_slice(&i.to_le_bytes());
        let body = p.creator.encrypt(&plaintext);
        out.body_bytes = body.len();
        let key = fingerprint(&body);
        let frame = format!(
            r#"{{"action":"send","id":"m{i}","group_id":"{}","body":"{}","devices":{{}}}}"#,
            p.group_id,
            b64(&body)
        );
        let at = ws::ns_since(base);
        let (took, reply) = send_once(&mut ws, frame).await;
        let timed = i >= plan.warmup_sends as u64;
        match reply {
            Ok(text) if timed => {
                let (d, q, x) = counts(&text);
                (out.delivered, out.queued, out.dropped) =
                    (out.delivered + d, out.queued + q, out.dropped + x);
                sent.push(took);
            }
            Ok(_) => {}
            Err(e) => {
                out.errors += 1;
                out.first_error.get_or_insert(e);
                continue;
            }
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let mut got = Vec::new();
        while got.len() < n {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some((k, ns))) if k == key => got.push(ns),
                Ok(Some(_)) => {}
                _ => break,
            }
        }
        if timed {
            out.missed += (n - got.len().min(n)) as u64;
            each.extend(got.iter().map(|ns| ns.saturating_sub(at)));
            if got.len() >= n {
                all.extend(got.iter().max().map(|ns| ns.saturating_sub(at)));
            }
        }
    }
    let _ = stop_tx.send(true);
    let _ = ws.close(None).await;
    out.all_received = Lat::from_ns(all);
    out.each_received = Lat::from_ns(each);
    out.sent = Lat::from_durations(&sent);
    out
}

/// Scenario 9 on one stack.
pub async fn run(stack: &Stack, plan: &Plan) -> MlsGroups {
    let mut out = MlsGroups {
        members: plan.members,
        ..Default::default()
    };
    let mut p = match prepare(stack, plan, &mut out).await {
        Ok(p) => p,
        Err(e) => {
            log(format!("9 · mls: {e}"));
            out.error = Some(e);
            return out;
        }
    };
    if let Err(e) = commits(stack, &mut p, plan, &mut out).await {
        log(format!("9 · mls: {e}"));
        out.error = Some(e);
    }
    out.online = Some(online(stack, &mut p, plan).await);
    out
}
