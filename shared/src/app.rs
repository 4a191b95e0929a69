//! Composition root: builds clients once (cold start) and wires adapters into services.

use std::sync::Arc;

use crate::clock::SharedClock;
use crate::config::Config;
use crate::crypto::password::PasswordHashing;
use crate::crypto::tokens::TokenIssuer;
use crate::error::Result;
use crate::services::account_data::AccountData;
use crate::services::relay::{self, Relay};
use crate::services::{
    accounts::Accounts, attachments::Attachments, auth::Authenticator, devices::Devices,
    directory::KeyDirectory, groups::Groups, mls_groups::MlsGroups, presence::Presence, AccountAge,
    Limiter,
};
use crate::storage::dynamodb::{self, Dynamo, Tables};
use crate::storage::redis::{self as redis_store, RedisStore};
use crate::storage::{BlobStore, Health, Pusher};

pub struct App {
    pub config: Config,
    pub clock: SharedClock,
    pub auth: Authenticator,
    pub accounts: Accounts,
    pub keys: KeyDirectory,
    pub devices: Devices,
    pub groups: Groups,
    /// The account's export and username change.
    pub account_data: AccountData,
    /// Presence share lists and reads; the relay announces transitions through it.
    pub presence: Presence,
    /// MLS groups' commits and GroupInfo; commits are delivered only where a WebSocket pusher
    /// was given (`from_parts`).
    pub mls: MlsGroups,
    /// None when no bucket is configured (`ATTACHMENTS_BUCKET`).
    pub attachments: Option<Attachments>,
    pub dynamo: Dynamo,
    pub redis: RedisStore,
}

impl App {
    pub async fn from_config(config: Config) -> Result<Arc<Self>> {
        Self::from_config_with_clock(config, crate::clock::system()).await
    }

    /// The same on another clock (tests advance a `ManualClock` instead of sleeping).
    pub async fn from_config_with_clock(config: Config, clock: SharedClock) -> Result<Arc<Self>> {
        Self::from_parts(config, clock, None, None).await
    }

    /// With `sockets`, the pusher of the WebSocket gateway: logout, refresh-token reuse and
    /// account deletion then close the ended sessions' open connections (the users function
    /// needs it; without one they are only refused at their next frame). With `blobs`
    /// (`storage::s3::blobs`: only where attachments are served, so the other functions do not
    /// carry the S3 client) the attachment routes work.
    pub async fn from_parts(
        config: Config,
        clock: SharedClock,
        sockets: Option<Arc<dyn Pusher>>,
        blobs: Option<Arc<dyn BlobStore>>,
    ) -> Result<Arc<Self>> {
        let (client, conn) = futures::join!(
            dynamodb::client_from_env(),
            redis_store::connect_from(&config)
        );
        let dynamo = Dynamo::new(client, Tables::with_prefix(&config.table_prefix));
        let redis = RedisStore::new(conn?, &config.redis_prefix, &config.inbox)
            .with_wait(config.redis_wait);
        Self::assemble(config, dynamo, redis, clock, sockets, blobs)
    }

    pub fn assemble(
        config: Config,
        dynamo: Dynamo,
        redis: RedisStore,
        clock: SharedClock,
        sockets: Option<Arc<dyn Pusher>>,
        blobs: Option<Arc<dyn BlobStore>>,
    ) -> Result<Arc<Self>> {
        // The adapters read the App's clock too: sessions expire, and revocations last, by it.
        let mls_pusher = sockets.clone();
        let dynamo = dynamo.with_clock(clock.clone());
        let redis = redis.with_clock(clock.clone());
        let tokens = TokenIssuer::new(&config.jwt, clock.clone());
        let redis_arc = Arc::new(redis.clone());
        let dynamo_arc = Arc::new(dynamo.clone());
        let auth = Authenticator::new(tokens.clone(), redis_arc.clone());
        let limiter = Limiter::new(redis_arc.clone(), config.rate_limits);
        let groups = Groups {
            groups: dynamo_arc.clone(),
            users: dynamo_arc.clone(),
            limiter: limiter.clone(),
            limits: config.groups,
            clock: clock.clone(),
        };
        let presence = Presence {
            store: redis_arc.clone(),
            registry: redis_arc.clone(),
            limiter: limiter.clone(),
            clock: clock.clone(),
        };
        let accounts = Accounts {
            presence: presence.clone(),
            users: dynamo_arc.clone(),
            sessions: dynamo_arc.clone(),
            revocations: redis_arc.clone(),
            inbox: redis_arc.clone(),
            connections: redis_arc.clone(),
            sockets,
            groups: groups.clone(),
            uploads: dynamo_arc.clone(),
            blobs: blobs.clone(),
            limiter: limiter.clone(),
            hashing: PasswordHashing::new(config.argon2)?,
            tokens,
        };
        let age = AccountAge::new(
            dynamo_arc.clone(),
            clock.clone(),
            config.keys.new_account_age,
        );
        let keys = KeyDirectory {
            keys: dynamo_arc.clone(),
            key_packages: dynamo_arc.clone(),
            users: dynamo_arc.clone(),
            limiter: limiter.clone(),
            key_limits: config.keys,
            device_limits: config.devices,
            age: age.clone(),
        };
        let attachments = match (blobs, &config.attachments) {
            (Some(blobs), Some(settings)) => Some(Attachments {
                blobs,
                index: dynamo_arc.clone(),
                clock: clock.clone(),
                age,
                limiter: limiter.clone(),
                config: settings.clone(),
            }),
            _ => None,
        };
        let account_data = AccountData {
            users: dynamo_arc.clone(),
            sessions: dynamo_arc.clone(),
            keys: dynamo_arc.clone(),
            key_packages: dynamo_arc.clone(),
            inbox: redis_arc.clone(),
            groups: dynamo_arc.clone(),
            uploads: dynamo_arc.clone(),
            presence: Some(redis_arc.clone()),
            limiter: limiter.clone(),
            clock: clock.clone(),
        };
        let devices = Devices {
            accounts: accounts.clone(),
            keys: dynamo_arc.clone(),
            provisioning: redis_arc,
            device_limits: config.devices,
        };
        let mls = MlsGroups {
            groups: groups.clone(),
            key_packages: dynamo_arc.clone(),
            relay: None,
        };
        let mut app = Self {
            config,
            clock,
            auth,
            accounts,
            keys,
            devices,
            groups,
            account_data,
            presence,
            mls,
            attachments,
            dynamo,
            redis,
        };
        app.mls.relay = mls_pusher.map(|pusher| app.relay(pusher));
        Ok(Arc::new(app))
    }

    /// The attachments service, or `unavailable` where no bucket is configured.
    pub fn attachments(&self) -> Result<&Attachments> {
        self.attachments.as_ref().ok_or_else(|| {
            crate::error::Error::unavailable("attachments", "ATTACHMENTS_BUCKET is not set")
        })
    }

    /// The relay service, pushing through `pusher`.
    pub fn relay(&self, pusher: Arc<dyn Pusher>) -> Relay {
        let redis = Arc::new(self.redis.clone());
        let parts = relay::Parts {
            auth: self.auth.clone(),
            limiter: self.accounts.limiter.clone(),
            age: self.keys.age.clone(),
            inbox: redis.clone(),
            registry: redis.clone(),
            users: Arc::new(self.dynamo.clone()),
            groups: Arc::new(self.dynamo.clone()),
            provisioning: redis.clone(),
            sent_log: redis,
            presence: self.presence.clone(),
            pusher,
            clock: self.clock.clone(),
        };
        Relay::new(parts, &self.config)
    }

    /// `GET /healthz`: both stores answer.
    pub async fn health(&self) -> Result<()> {
        let (d, r) = futures::join!(self.dynamo.ping(), self.redis.ping());
        d.and(r)
    }
}
