//! The relay's side of linking: anonymous provisioning sockets, which get an address and then
//! the primary device's opaque provisioning message (`Devices::send_provisioning`).

use rand::RngCore;

use super::relay::Relay;
use super::{limit, Limit};
use crate::error::{Error, Result};

impl Relay {
    /// `$connect` of a provisioning socket (no token): counted per IP like any handshake.
    pub async fn connect_provisioning(&self, connection_id: &str, source_ip: &str) -> Result<()> {
        limit(
            self.limiter.as_ref(),
            &self.limits,
            Limit::ConnectIp { ip: source_ip },
            1,
        )
        .await?;
        self.provisioning
            .open_socket(connection_id, self.device_limits.provisioning_ttl.as_secs())
            .await?;
        tracing::info!(connection_id, "provisioning socket connected");
        Ok(())
    }

    /// `provision`: the socket's provisioning address (128 random bits), the same on every ask.
    /// `(address, seconds it lasts)`; `Unauthorized` on any other connection.
    pub async fn provision(&self, connection_id: &str) -> Result<(String, u64)> {
        let mut raw = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut raw);
        let fresh = crate::validation::encode_url(&raw);
        let ttl = self.device_limits.provisioning_ttl.as_secs();
        match self
            .provisioning
            .address(connection_id, &fresh, ttl)
            .await?
        {
            Some(address) => Ok((address, ttl)),
            // A device's own connection keeps going: the frame was only misplaced.
            None if self.registry.registration(connection_id).await?.is_some() => Err(
                Error::InvalidFrame("`provision` is for provisioning sockets only".into()),
            ),
            None => Err(Error::Unauthorized),
        }
    }

    pub(crate) async fn is_provisioning(&self, connection_id: &str) -> Result<bool> {
        self.provisioning.is_socket(connection_id).await
    }
}
