//! Devices of an account: linking (codes and provisioning messages), listing and removal.
//! Linking is zero-knowledge like Signal's provisioning: the primary device sends the new one an
//! opaque message (encrypted by the client to the new device's key) through the relay, which
//! only forwards it; the new device then presents the code with its own keys.

use std::sync::Arc;

use rand::RngCore;
use sha2::{Digest, Sha256};

use super::accounts::Accounts;
use super::Limit;
use crate::config::DeviceLimits;
use crate::crypto::tokens::Principal;
use crate::error::{Error, Result};
use crate::frames::ServerFrame;
use crate::model::{
    DeviceAddress, DeviceId, DeviceList, DevicesOut, LinkDeviceRequest, ProvisioningCodeOut,
    TokensOut, PRIMARY_DEVICE,
};
use crate::storage::{KeyStore, Provisioning, PushError};
use crate::validation;

#[derive(Clone)]
pub struct Devices {
    pub(crate) accounts: Accounts,
    pub(crate) keys: Arc<dyn KeyStore>,
    pub(crate) provisioning: Arc<dyn Provisioning>,
    pub(crate) device_limits: DeviceLimits,
}

/// What the store keeps of a linking code: its SHA-256 (hex), never the code.
fn code_hash(code: &str) -> String {
    Sha256::digest(code.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Devices {
    /// `POST /v1/devices/provisioning`: a single-use linking code (256 random bits).
    pub async fn provisioning_code(&self, who: &Principal) -> Result<ProvisioningCodeOut> {
        if who.device_id != PRIMARY_DEVICE {
            return Err(Error::Forbidden);
        }
        self.limit_provisioning(who).await?;
        let list = self.device_list(who).await?;
        if list.devices.len() >= self.device_limits.max_devices as usize {
            return Err(Error::TooManyDevices);
        }
        let mut raw = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut raw);
        let code = validation::encode_url(&raw);
        let ttl = self.device_limits.provisioning_ttl.as_secs();
        self.provisioning
            .put_code(&code_hash(&code), who.user_id, ttl)
            .await?;
        tracing::info!("linking code issued");
        Ok(ProvisioningCodeOut {
            code,
            expires_in: ttl,
        })
    }

    /// The account's devices, as the user store lists them.
    async fn device_list(&self, who: &Principal) -> Result<DeviceList> {
        self.accounts
            .users
            .devices(who.user_id)
            .await?
            .ok_or(Error::UserNotFound)
    }

    async fn limit_provisioning(&self, who: &Principal) -> Result<()> {
        let user = who.user_id;
        self.accounts
            .limiter
            .take(Limit::Provisioning { user })
            .await
    }

    /// `PUT /v1/provisioning/{address}`: writes the opaque message to the provisioning socket
    /// and closes it. The address is used up whatever happens next.
    pub async fn send_provisioning(
        &self,
        who: &Principal,
        address: &str,
        body: &str,
    ) -> Result<()> {
        self.limit_provisioning(who).await?;
        let bytes = validation::base64("body", body)?;
        if bytes.len() > self.device_limits.provisioning_max_bytes {
            return Err(Error::MessageTooLarge);
        }
        let well_formed = !address.is_empty()
            && address.len() <= 64
            && address
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !well_formed {
            return Err(Error::UnknownAddress);
        }
        let sockets =
            self.accounts.sockets.as_ref().ok_or_else(|| {
                Error::unavailable("provisioning", "no WebSocket gateway to push to")
            })?;
        let socket = self
            .provisioning
            .take_address(address)
            .await?
            .ok_or(Error::UnknownAddress)?;
        let frame = ServerFrame::ProvisioningMessage {
            body: validation::encode(&bytes),
        }
        .to_json();
        let pushed = sockets.push(&socket, &frame).await;
        if let Err(e) = self.provisioning.close_socket(&socket).await {
            e.log();
        }
        match pushed {
            Ok(()) => {}
            Err(PushError::Gone) => return Err(Error::UnknownAddress),
            Err(PushError::Failed(detail)) => {
                return Err(Error::unavailable("provisioning push", detail))
            }
        }
        if let Err(PushError::Failed(detail)) = sockets.close(&socket).await {
            tracing::warn!(detail = %detail, "provisioning socket not closed");
        }
        tracing::info!("provisioning message delivered");
        Ok(())
    }

    /// `POST /v1/devices`: the new device presents the code with its keys (signed by the
    /// account's identity key) and gets its id and tokens. A request refused for its keys
    /// leaves the code usable.
    pub async fn link(&self, req: LinkDeviceRequest, ip: &str) -> Result<TokensOut> {
        let accounts = &self.accounts;
        accounts.limiter.take(Limit::Link { ip }).await?;
        let hash = code_hash(&req.code);
        let owner = self
            .provisioning
            .code_owner(&hash)
            .await?
            .ok_or(Error::InvalidCode)?;
        let primary = self
            .keys
            .profile(DeviceAddress::primary(owner))
            .await?
            .ok_or(Error::InvalidCode)?;
        let device = req.validate(&primary.identity_key)?;
        // A full account keeps the code (a device removed meanwhile makes room), and so does a
        // registration id the new device must change; the store checks both again as it adds.
        let (devices, retired) = accounts
            .users
            .device_history(owner)
            .await?
            .ok_or(Error::InvalidCode)?;
        if devices.devices.len() >= self.device_limits.max_devices as usize {
            return Err(Error::TooManyDevices);
        }
        if retired.repeats(devices.next_free(), device.profile.registration_id) {
            return Err(Error::RegistrationIdReused);
        }
        // Used up here, once: of two requests with one code, one goes on.
        if self.provisioning.take_code(&hash).await? != Some(owner) {
            return Err(Error::InvalidCode);
        }
        let (device_id, list) = accounts
            .users
            .add_device(owner, &device, self.device_limits.max_devices)
            .await
            .map_err(|e| match e {
                Error::UserNotFound => Error::InvalidCode,
                e => e,
            })?;
        if let Err(e) = accounts.inbox.set_devices(owner, &list).await {
            e.log();
        }
        tracing::info!(device_id, "device linked");
        accounts
            .start_session(owner, device_id)
            .await?
            .ok_or(Error::InvalidCode)
    }

    /// `GET /v1/devices`
    pub async fn list(&self, who: &Principal) -> Result<DevicesOut> {
        let list = self.device_list(who).await?;
        Ok(DevicesOut {
            devices: list.devices.iter().map(Into::into).collect(),
        })
    }

    /// `DELETE /v1/devices/{device_id}`: the primary removes a linked device, or a linked device
    /// itself. Its keys, sessions (revoked at once), inbox and sockets go.
    pub async fn remove(&self, who: &Principal, device_id: DeviceId) -> Result<()> {
        if device_id == PRIMARY_DEVICE {
            return Err(Error::invalid(
                "device 1 is the primary device: delete the account instead",
            ));
        }
        if who.device_id != PRIMARY_DEVICE && who.device_id != device_id {
            return Err(Error::Forbidden);
        }
        let accounts = &self.accounts;
        let user_id = who.user_id;
        // Sessions before the list, so a removal that fails midway can be asked again (the
        // device is still listed); and after it, for a login that raced this removal (the
        // session store refuses sessions of unlisted devices from then on).
        self.end_sessions(user_id, device_id).await?;
        let list = accounts.users.remove_device(user_id, device_id).await?;
        self.end_sessions(user_id, device_id).await?;
        accounts
            .close_connections(user_id, |_, d| d == device_id)
            .await;
        accounts.inbox.set_devices(user_id, &list).await?;
        tracing::info!(device_id, "device removed");
        Ok(())
    }
}

impl Devices {
    /// Deletes the device's sessions and revokes their access tokens.
    async fn end_sessions(&self, user_id: crate::model::UserId, device_id: DeviceId) -> Result<()> {
        let accounts = &self.accounts;
        for session_id in accounts.sessions.delete_device(user_id, device_id).await? {
            accounts.revoke_access(session_id).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_hash_of_the_code_is_kept() {
        let h = code_hash("abc");
        assert_eq!(h.len(), 64);
        assert!(!h.contains("abc"));
        assert_eq!(h, code_hash("abc"));
        assert_ne!(h, code_hash("abd"));
    }
}
