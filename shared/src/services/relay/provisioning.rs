//! The relay's side of linking: anonymous provisioning sockets, which get an address and then
//! the primary device's opaque provisioning message (`Devices::send_provisioning`).

use rand::RngCore;

use super::Relay;
use crate::error::{Error, Result};
use crate::services::Limit;

impl Relay {
    /// `$connect` of a provisioning socket (no token): counted per IP like any handshake.
    pub async fn connect_provisioning(&self, connection_id: &str, source_ip: &str) -> Result<()> {
        self.limiter
            .take(Limit::ConnectIp { ip: source_ip })
            .await?;
        self.provisioning
            .open_socket(connection_id, self.device_limits.provisioning_ttl.as_secs())
            .await?;
        tracing::info!(connection_id, "provisioning socket connected");
        Ok(())
    }

    /// `provision`: the socket's provisioning address (128 random bits), the same on every ask.
    /// `(address, seconds it lasts)`. On a device's own connection it is a frame of the user's
    /// like any other (`RATE_LIMIT_FRAMES`) and refused `invalid_frame`; on a provisioning socket
    /// it is one of the socket's frames ([`Self::provisioning_frame`]).
    pub async fn provision(&self, connection_id: &str) -> Result<(String, u64)> {
        match self.frame_from(connection_id).await {
            // A device's own connection keeps going: the frame was only misplaced.
            Ok(_) => {
                return Err(Error::InvalidFrame(
                    "`provision` is for provisioning sockets only".into(),
                ))
            }
            Err(Error::Unauthorized) => {}
            Err(e) => return Err(e),
        }
        // Charged first: the address lookup is also what tells a provisioning socket from a
        // dead connection, so a frame past the budget costs one round trip, not the lookup too.
        self.spend_provisioning_frame(connection_id).await?;
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
            None => Err(Error::Unauthorized),
        }
    }

    /// A frame of a connection that is no device's: allowed while it is a live provisioning
    /// socket within its frame budget. `Unauthorized` otherwise, which ends the connection.
    pub(super) async fn provisioning_frame(&self, connection_id: &str) -> Result<()> {
        if !self.provisioning.is_socket(connection_id).await? {
            return Err(Error::Unauthorized);
        }
        self.spend_provisioning_frame(connection_id).await
    }

    /// Takes one frame from the socket's budget (`RATE_LIMIT_PROVISIONING_FRAMES`, in Redis: the
    /// frames of one socket may reach any function instance). A socket past it has nothing left
    /// to ask for that a well-behaved client would: it is over, as an expired one is.
    async fn spend_provisioning_frame(&self, connection_id: &str) -> Result<()> {
        let spent = self
            .limiter
            .take(Limit::ProvisioningFrames { connection_id })
            .await;
        match spent {
            Err(Error::RateLimited { .. }) => {
                tracing::info!(connection_id, "provisioning socket past its frame budget");
                Err(Error::Unauthorized)
            }
            other => other,
        }
    }
}
