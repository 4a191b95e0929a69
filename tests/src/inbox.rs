//! The inbox adapter as the suites from before devices use it: an account with only its primary
//! device (1), and one envelope at a time sent to that device; and what only tests do to the
//! Redis adapters (take envelopes without a fetch, read a connection's user).

use redis::AsyncCommands;
use shared::model::{Device, DeviceAddress, DeviceList, UserId, PRIMARY_DEVICE};
use shared::storage::redis::RedisStore;
use shared::storage::{Addressed, Delivery, Fanned, Fanout, Inbox, StoredEnvelope};
use shared::{Error, Result};

/// The registration id [`open`] gives the primary device (sends from [`deliver_one`] do not
/// check it).
pub const REGISTRATION_ID: u32 = 1;

/// Gives the inbox an account with only its primary device (what `Inbox::open` did before
/// devices): its device list, version 1.
pub async fn open<I: Inbox + ?Sized>(store: &I, user_id: UserId) -> Result<()> {
    store
        .set_devices(
            user_id,
            &DeviceList {
                version: 1,
                devices: vec![Device {
                    device_id: PRIMARY_DEVICE,
                    registration_id: REGISTRATION_ID,
                    created_at: 0,
                }],
            },
        )
        .await
}

/// Delivers one envelope to the primary device of `to`, from another account, without a
/// registration id to check: the device's outcome, or `None` when the inbox has no device list
/// for `to` (`Fanned::UnknownInbox`). A recipient with other devices than the primary answers
/// `MismatchedDevices` (nothing stored).
pub async fn deliver_one<I: Inbox + ?Sized>(
    store: &I,
    to: UserId,
    envelope: &StoredEnvelope,
    online_only: bool,
    now_ms: u64,
    lease_until_ms: u64,
) -> Result<Option<Delivery>> {
    let send = Fanout {
        to,
        sender_device: None,
        legacy: false,
        online_only,
        envelopes: vec![Addressed {
            device_id: PRIMARY_DEVICE,
            registration_id: None,
            envelope: envelope.clone(),
        }],
    };
    match store.deliver(&send, now_ms, lease_until_ms).await? {
        Fanned::UnknownInbox => Ok(None),
        Fanned::Done(mut outcomes) if outcomes.len() == 1 => Ok(Some(outcomes.remove(0).1)),
        Fanned::Done(outcomes) => Err(Error::Internal(format!(
            "one envelope sent, {} outcomes: {outcomes:?}",
            outcomes.len()
        ))),
        Fanned::Mismatched { missing, extra, .. } => {
            Err(Error::MismatchedDevices { missing, extra })
        }
        Fanned::Stale(devices) => Err(Error::StaleDevices(devices)),
    }
}

/// Takes up to `max` envelopes from the head of a device's inbox for good, oldest first: a fetch
/// batch taken into flight and settled as written, so the inbox's accounting stays in step.
pub async fn pop<I: Inbox + ?Sized>(
    store: &I,
    device: DeviceAddress,
    max: usize,
) -> Result<Vec<StoredEnvelope>> {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_millis() as u64;
    let lease_until_ms = now_ms + 30_000;
    let batch = store
        .take_in_flight(device, max, lease_until_ms, now_ms)
        .await?;
    store
        .settle_in_flight(device, &batch, lease_until_ms, &[])
        .await?;
    Ok(batch)
}

/// The user a connection is registered for, read from its key (`RedisKeys::conn`:
/// `<user>|<session>|…`); `None` when it is not registered.
pub async fn user_of(store: &RedisStore, connection_id: &str) -> Option<UserId> {
    let raw: Option<String> = store
        .connection()
        .get(store.keys().conn(connection_id))
        .await
        .expect("GET");
    raw.and_then(|s| uuid::Uuid::parse_str(s.split('|').next().unwrap_or_default()).ok())
}
