//! MLS groups on the relay: an application message goes to the devices in the group's tree (the
//! relay tracks them; the sender names none), only at the group's epoch or the one before it,
//! and the groups function hands a won Commit or a Welcome to the devices it is for.

use std::collections::BTreeMap;

use super::group_send::{Current, DeviceMap, GroupSent, Targets};
use super::Relay;
use crate::error::{Error, Result};
use crate::frames::GroupDevice;
use crate::groups::{Group, GroupId};
use crate::mls;
use crate::model::{DeviceAddress, DeviceId, UserId};
use crate::services::Limit;

/// Epochs behind the group's an application message may still be from: one, for messages sent
/// while a Commit was being accepted (their receivers keep the previous epoch's secrets for as
/// long).
pub const EPOCH_GRACE: u64 = 1;

impl Relay {
    /// An application message to an MLS group: `bytes` is an MLS PrivateMessage of this group,
    /// of content type application, at the current epoch or `EPOCH_GRACE` before; the sending
    /// device is in the tree. Each other tree device of a joined member gets it.
    pub(super) async fn mls_targets(
        &self,
        from: DeviceAddress,
        group: &Group,
        bytes: &[u8],
        addressed: usize,
    ) -> Result<DeviceMap> {
        if addressed > 0 {
            return Err(Error::InvalidFrame(
                "`devices` must be empty in an MLS group: the relay sends to the group's tree"
                    .into(),
            ));
        }
        let current = group
            .mls
            .as_ref()
            .map(|m| m.epoch)
            .ok_or(Error::StaleEpoch { current: 0 })?;
        let header = mls::application_header(bytes)?;
        if header.group_id != group.id.as_bytes() {
            return Err(Error::InvalidFrame(
                "the body is an MLS message of another group".into(),
            ));
        }
        if !header.is_application {
            return Err(Error::InvalidFrame(
                "handshake messages go to POST /v1/groups/{group_id}/mls/commits".into(),
            ));
        }
        if header.epoch > current || header.epoch + EPOCH_GRACE < current {
            return Err(Error::StaleEpoch { current });
        }
        let in_tree = group
            .entry(from.user_id)
            .is_some_and(|m| m.mls_devices.contains(&from.device_id));
        if !in_tree {
            return Err(Error::NotAMember);
        }
        let wanted: BTreeMap<UserId, Vec<DeviceId>> = group
            .members
            .iter()
            .filter(|m| group.is_member(m.user_id))
            .map(|m| {
                let devices = m
                    .mls_devices
                    .iter()
                    .copied()
                    .filter(|&d| DeviceAddress::new(m.user_id, d) != from)
                    .collect::<Vec<_>>();
                (m.user_id, devices)
            })
            .filter(|(_, d)| !d.is_empty())
            .collect();
        // The roster was paid for; devices beyond one per entry are paid now.
        let devices: usize = wanted.values().map(Vec::len).sum();
        let extra = devices.saturating_sub(group.members.len());
        if extra > 0 {
            let extra = u32::try_from(extra).unwrap_or(u32::MAX);
            self.limiter
                .take_n(
                    Limit::GroupDeliveries {
                        sender: from.user_id,
                    },
                    extra,
                )
                .await?;
        }
        self.registered(&wanted).await
    }

    /// Tells these devices that a Commit was accepted at `epoch` (from `from`): an envelope of
    /// the group with `mls_epoch` and no body. A device no longer registered gets nothing.
    pub async fn notify_commit(
        &self,
        from: DeviceAddress,
        group_id: GroupId,
        epoch: u64,
        devices: &BTreeMap<UserId, Vec<DeviceId>>,
    ) -> Result<GroupSent> {
        let map = self.registered(devices).await?;
        let targets = Targets {
            group_id,
            devices: &map,
            online_only: false,
            mls_epoch: Some(epoch),
            expires_in: None,
        };
        self.fan_out(from, false, &[], targets, None).await
    }

    /// The devices with the registration ids they have now; those not registered are left out.
    async fn registered(&self, wanted: &BTreeMap<UserId, Vec<DeviceId>>) -> Result<DeviceMap> {
        let users: Vec<UserId> = wanted.keys().copied().collect();
        let copies = self.inbox.devices_of(&users).await?;
        let mut current = Current::new();
        let mut unknown = Vec::new();
        for (&user, copy) in users.iter().zip(copies) {
            match copy {
                Some(devices) => {
                    current.insert(user, devices);
                }
                None => unknown.push(user),
            }
        }
        self.read_devices(&unknown, &mut current).await?;
        Ok(wanted
            .iter()
            .map(|(user, devices)| {
                let registered = current.get(user).map(Vec::as_slice).unwrap_or_default();
                let found = devices
                    .iter()
                    .filter_map(|d| {
                        registered.iter().find(|(id, _)| id == d).map(
                            |&(device_id, registration_id)| GroupDevice {
                                device_id,
                                registration_id,
                            },
                        )
                    })
                    .collect::<Vec<_>>();
                (*user, found)
            })
            .filter(|(_, d)| !d.is_empty())
            .collect())
    }
}
