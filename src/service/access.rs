//! Who may do what: the server's API keys and Prefect's auth string, checked on every request.
//!
//! Keys are stored as `HMAC-SHA256(salt, token)` (the salt is random, one per data directory)
//! and compared in constant time; the token itself is shown once, when the key is made, and
//! never stored. Auth is on once the server has an auth string or any key record (a revoked
//! key keeps it on: revoking the last key does not open the server). While it is off, every
//! request is admitted as [`Principal::Anyone`].
//!
//! The registry lives in memory (the store is read once, at start); keys are made and revoked
//! through the core, and the registry is updated once that is committed. A key's last use is
//! kept in memory and written every [`LAST_USED_FLUSH`] and at shutdown.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::sync::watch;

use crate::model::access::{key_id, MAX_API_KEYS};
use crate::model::{ApiKey, CreatedApiKey, JsonPath, NewApiKey, Permission, Problems, Role, Timestamp};
use crate::store::{Store, StoreError, StoredKey, Tx};

use super::clock::{self, Clock};
use super::ServiceError;

type HmacSha256 = Hmac<Sha256>;

/// How often keys' last-use times are written (they are also written at shutdown).
pub const LAST_USED_FLUSH: Duration = Duration::from_secs(60);
/// Bytes of a key's public id (12 hex digits).
const ID_BYTES: usize = 6;
/// Bytes of a key's secret (256 bits, 43 characters of base64url).
const SECRET_BYTES: usize = 32;
/// Bytes of the per-directory salt of key digests.
const SALT_BYTES: usize = 32;

/// Who made a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    /// Auth is off: anyone may do anything.
    Anyone,
    /// Prefect's auth string (`Authorization: Basic`): an administrator.
    AuthString,
    /// An API key.
    Key {
        /// Its public id.
        id: String,
        /// Its name.
        name: String,
        /// What it may do.
        role: Role,
    },
}

impl Principal {
    /// Whether it may do `permission`.
    pub fn permits(&self, permission: Permission) -> bool {
        match self {
            Principal::Anyone | Principal::AuthString => true,
            Principal::Key { role, .. } => role.permits(permission),
        }
    }

    /// Its name: the key's, or what it is.
    pub fn name(&self) -> &str {
        match self {
            Principal::Anyone => "anyone",
            Principal::AuthString => "the auth string",
            Principal::Key { name, .. } => name,
        }
    }

    /// How a refusal names it: "the `emit` key `checkout-service`".
    pub fn describe(&self) -> String {
        match self {
            Principal::Anyone => "an anonymous client".into(),
            Principal::AuthString => "the auth string".into(),
            Principal::Key { name, role, .. } => format!("the `{role}` key `{name}`"),
        }
    }
}

/// Credentials offered with a request.
#[derive(Clone, Copy, Debug)]
pub enum Credential<'a> {
    /// `Authorization: Bearer <token>`: an API key.
    Bearer(&'a str),
    /// `Authorization: Basic <base64>`, decoded: Prefect's auth string (`user:pass`).
    Basic(&'a str),
    /// The token of a WebSocket `auth` message: an API key or the auth string.
    Token(&'a str),
}

/// Why a request was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AccessError {
    /// No credentials, on a server that needs them.
    #[error(
        "this server requires credentials: send an API key as `Authorization: Bearer <key>` (the tripwire \
         CLI and SDK read it from TRIPWIRE_API_KEY), or Prefect's auth string as `Authorization: Basic` \
         (Prefect's client sends PREFECT_API_AUTH_STRING)"
    )]
    Missing,
    /// An `Authorization` header that is neither `Bearer <key>` nor `Basic <base64>`.
    #[error("the `Authorization` header is not `Bearer <API key>` or `Basic <base64 of the auth string>`")]
    Malformed,
    /// A token that is no key of this server.
    #[error("the API key offered is not one of this server's keys (keys start with `tw_`; make one with `tripwire keys create`)")]
    UnknownKey,
    /// A revoked key.
    #[error("the API key `{name}` was revoked; ask an administrator for a new one")]
    Revoked {
        /// The key's name.
        name: String,
    },
    /// A wrong auth string.
    #[error("the auth string offered is not this server's")]
    WrongAuthString,
    /// An auth string, to a server that has none.
    #[error("this server has no auth string (`--auth-string`); send an API key as `Authorization: Bearer <key>`")]
    NoAuthString,
    /// Valid credentials without the permission.
    #[error("{who} may not {action}; that needs the `{needs}` role{}", if *needs == Role::Admin { "" } else { " (or `admin`)" })]
    Forbidden {
        /// Who asked ([`Principal::describe`]).
        who: String,
        /// What was asked, e.g. `PUT /api/triggers/x`.
        action: String,
        /// The least role that may.
        needs: Role,
    },
}

impl AccessError {
    /// `unauthorized` (401: the credentials are missing or wrong) or `forbidden` (403: they
    /// are right, the role may not).
    pub fn code(&self) -> &'static str {
        match self {
            AccessError::Forbidden { .. } => "forbidden",
            _ => "unauthorized",
        }
    }

    /// 401 or 403.
    pub fn status(&self) -> u16 {
        match self {
            AccessError::Forbidden { .. } => 403,
            _ => 401,
        }
    }
}

/// A key in the registry.
#[derive(Debug)]
struct Entry {
    key: ApiKey,
    digest: Vec<u8>,
    /// Microseconds of the last use, 0 for never.
    last_used: AtomicI64,
    /// The last use already written.
    written: AtomicI64,
}

impl Entry {
    fn new(stored: StoredKey) -> Result<Entry, StoreError> {
        let digest = hex_decode(&stored.digest).ok_or_else(|| StoreError::Corrupt {
            what: "API key",
            message: format!("the digest of key `{}` is not hex", stored.key.id),
        })?;
        let used = stored.key.last_used.map_or(0, Timestamp::as_micros);
        Ok(Entry { key: stored.key, digest, last_used: AtomicI64::new(used), written: AtomicI64::new(used) })
    }

    /// The record with its last use as known in memory.
    fn record(&self) -> ApiKey {
        let used = self.last_used.load(Ordering::Relaxed);
        ApiKey { last_used: (used != 0).then(|| Timestamp::from_micros(used)), ..self.key.clone() }
    }
}

/// The keys and the auth string of one server; see the module documentation.
pub struct Access {
    salt: Vec<u8>,
    auth_string: Option<Vec<u8>>,
    keys: RwLock<HashMap<String, Arc<Entry>>>,
    on: AtomicBool,
    clock: Arc<dyn Clock>,
    /// Bumped after every revocation, so that open connections check their key again.
    revocations: watch::Sender<u64>,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access").field("on", &self.is_on()).finish_non_exhaustive()
    }
}

impl Access {
    /// Reads the keys of `store` (writing its salt first, once per data directory) and takes
    /// the auth string.
    pub fn load(store: &Store, auth_string: Option<&str>, clock: Arc<dyn Clock>) -> Result<Access, ServiceError> {
        let salt = match store.key_salt()? {
            Some(salt) => salt,
            None => {
                let fresh: [u8; SALT_BYTES] = clock::secret_bytes().map_err(random_failed)?;
                let tx = store.begin()?;
                let salt = tx.init_key_salt(&fresh)?;
                tx.commit()?;
                salt
            }
        };
        let auth_string = auth_string.map(|s| digest(&salt, s));
        let mut keys = HashMap::new();
        for stored in store.keys()? {
            keys.insert(stored.key.id.clone(), Arc::new(Entry::new(stored)?));
        }
        let on = auth_string.is_some() || !keys.is_empty();
        Ok(Access {
            salt,
            auth_string,
            keys: RwLock::new(keys),
            on: AtomicBool::new(on),
            clock,
            revocations: watch::channel(0).0,
        })
    }

    /// Whether requests need credentials.
    pub fn is_on(&self) -> bool {
        self.on.load(Ordering::Acquire)
    }

    /// Whether an auth string was given.
    pub fn has_auth_string(&self) -> bool {
        self.auth_string.is_some()
    }

    /// Who `credential` is, or why it is refused. While auth is off, anyone is admitted and
    /// credentials are not looked at (as Prefect's server ignores an auth header it does not
    /// need).
    pub fn authenticate(&self, credential: Option<Credential<'_>>) -> Result<Principal, AccessError> {
        if !self.is_on() {
            return Ok(Principal::Anyone);
        }
        match credential {
            None => Err(AccessError::Missing),
            Some(Credential::Bearer(token)) => self.key(token),
            Some(Credential::Basic(text)) => self.auth_string(text),
            Some(Credential::Token(token)) if key_id(token).is_some() => self.key(token),
            Some(Credential::Token(token)) => self.auth_string(token),
        }
    }

    fn auth_string(&self, offered: &str) -> Result<Principal, AccessError> {
        let expected = self.auth_string.as_deref().ok_or(AccessError::NoAuthString)?;
        verify(&self.salt, offered, expected).then_some(Principal::AuthString).ok_or(AccessError::WrongAuthString)
    }

    fn key(&self, token: &str) -> Result<Principal, AccessError> {
        let id = key_id(token).ok_or(AccessError::UnknownKey)?;
        let entry = self.keys.read().unwrap_or_else(|e| e.into_inner()).get(id).cloned();
        let entry = entry.ok_or(AccessError::UnknownKey)?;
        if !verify(&self.salt, token, &entry.digest) {
            return Err(AccessError::UnknownKey);
        }
        if entry.key.revoked.is_some() {
            return Err(AccessError::Revoked { name: entry.key.name.clone() });
        }
        entry.last_used.fetch_max(self.clock.now().as_micros(), Ordering::Relaxed);
        Ok(Principal::Key { id: entry.key.id.clone(), name: entry.key.name.clone(), role: entry.key.role })
    }

    /// Whether `principal` is still admitted (its key was not revoked since).
    pub fn still_admits(&self, principal: &Principal) -> bool {
        match principal {
            Principal::Anyone | Principal::AuthString => true,
            Principal::Key { id, .. } => self
                .keys
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .get(id)
                .is_some_and(|entry| entry.key.revoked.is_none()),
        }
    }

    /// Resolves once `principal`'s key is revoked (never for the auth string or while auth
    /// is off): what ends its open WebSockets and long polls.
    pub async fn until_revoked(&self, principal: &Principal) {
        let mut revocations = self.revocations.subscribe();
        while self.still_admits(principal) {
            if revocations.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// Every key, by name, with its last use as known now.
    pub fn list(&self) -> Vec<ApiKey> {
        let mut keys: Vec<ApiKey> =
            self.keys.read().unwrap_or_else(|e| e.into_inner()).values().map(|e| e.record()).collect();
        keys.sort_by(|a, b| (a.revoked.is_some(), &a.name, a.created).cmp(&(b.revoked.is_some(), &b.name, b.created)));
        keys
    }

    /// Makes a key for `new` (not yet stored): its record with the token's digest, and the
    /// token.
    pub fn mint(&self, new: &NewApiKey, now: Timestamp) -> Result<(StoredKey, String), ServiceError> {
        new.check().map_err(ServiceError::Invalid)?;
        let id: [u8; ID_BYTES] = clock::secret_bytes().map_err(random_failed)?;
        let secret: [u8; SECRET_BYTES] = clock::secret_bytes().map_err(random_failed)?;
        let id = hex_encode(&id);
        let token = format!("tw_{id}_{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret));
        let key = ApiKey { id, name: new.name.clone(), role: new.role, created: now, last_used: None, revoked: None };
        Ok((StoredKey { key, digest: hex_encode(&digest(&self.salt, &token)) }, token))
    }

    /// Takes a key as committed (made or revoked) into the registry; a revocation takes effect
    /// for the next request, and open connections of the key are told.
    pub fn record(&self, stored: StoredKey) -> Result<(), StoreError> {
        let revoked = stored.key.revoked.is_some();
        let entry = Entry::new(stored)?;
        let mut keys = self.keys.write().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = keys.get(&entry.key.id) {
            entry.last_used.fetch_max(old.last_used.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        keys.insert(entry.key.id.clone(), Arc::new(entry));
        self.on.store(true, Ordering::Release);
        drop(keys);
        if revoked {
            self.revocations.send_modify(|n| *n += 1);
        }
        Ok(())
    }

    /// The last uses not yet written: `(key id, when)`.
    pub fn unwritten_uses(&self) -> Vec<(String, Timestamp)> {
        self.keys
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter_map(|e| {
                let used = e.last_used.load(Ordering::Relaxed);
                (used > e.written.load(Ordering::Relaxed)).then(|| (e.key.id.clone(), Timestamp::from_micros(used)))
            })
            .collect()
    }

    /// Notes that these last uses were written.
    pub fn uses_written(&self, uses: &[(String, Timestamp)]) {
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
        for (id, at) in uses {
            if let Some(entry) = keys.get(id) {
                entry.written.fetch_max(at.as_micros(), Ordering::Relaxed);
            }
        }
    }
}

/// What an attempt to make a key decides in the write transaction: the key stored, or
/// `Conflict` when a key not revoked has its name.
pub(super) fn insert_key(tx: &Tx, key: StoredKey) -> Result<Result<StoredKey, ServiceError>, StoreError> {
    let keys = tx.keys()?;
    if keys.iter().any(|k| k.key.revoked.is_none() && k.key.name == key.key.name) {
        return Ok(Err(ServiceError::Conflict { what: "API key", id: key.key.name }));
    }
    if keys.len() >= MAX_API_KEYS {
        let mut problems = Problems::default();
        problems
            .add(&JsonPath::root(), format!("the server keeps at most {MAX_API_KEYS} API keys, revoked ones included"));
        return Ok(Err(ServiceError::Invalid(problems)));
    }
    tx.put_key(&key)?;
    Ok(Ok(key))
}

/// Revokes the key named `which` (its name among the keys not revoked, or its id), at `now`;
/// revoking a revoked key answers it unchanged.
pub(super) fn revoke_key(tx: &Tx, which: &str, now: Timestamp) -> Result<Result<StoredKey, ServiceError>, StoreError> {
    let keys = tx.keys()?;
    let found = keys
        .iter()
        .find(|k| k.key.revoked.is_none() && k.key.name == which)
        .or_else(|| keys.iter().find(|k| k.key.id == which));
    let Some(found) = found else {
        return Ok(Err(ServiceError::NotFound { what: "API key", id: which.to_owned() }));
    };
    let mut key = found.clone();
    if key.key.revoked.is_none() {
        key.key.revoked = Some(now);
        tx.put_key(&key)?;
    }
    Ok(Ok(key))
}

/// Writes last uses (each only if later than the one stored).
pub(super) fn write_uses(tx: &Tx, uses: &[(String, Timestamp)]) -> Result<(), StoreError> {
    for (id, at) in uses {
        if let Some(mut key) = tx.key(id)? {
            if key.key.last_used.is_none_or(|t| t < *at) {
                key.key.last_used = Some(*at);
                tx.put_key(&key)?;
            }
        }
    }
    Ok(())
}

/// Key management on a data directory no server has open (`tripwire keys ... --data DIR`).
pub struct OfflineKeys {
    store: Store,
    access: Access,
}

impl OfflineKeys {
    /// Opens the data directory (a running server holds it: then this fails, and the
    /// commands go through its API instead).
    pub fn open(dir: &Path) -> Result<OfflineKeys, ServiceError> {
        let store = Store::open(dir)?;
        let access = Access::load(&store, None, Arc::new(clock::SystemClock))?;
        Ok(OfflineKeys { store, access })
    }

    /// Makes a key; the answer holds its token, shown this once.
    pub fn create(&self, new: &NewApiKey) -> Result<CreatedApiKey, ServiceError> {
        let (stored, token) = self.access.mint(new, self.access.clock.now())?;
        let tx = self.store.begin()?;
        let stored = insert_key(&tx, stored)??;
        tx.commit()?;
        Ok(CreatedApiKey { key: stored.key, token })
    }

    /// Revokes a key by name or id.
    pub fn revoke(&self, which: &str) -> Result<ApiKey, ServiceError> {
        let tx = self.store.begin()?;
        let stored = revoke_key(&tx, which, self.access.clock.now())??;
        tx.commit()?;
        Ok(stored.key)
    }

    /// Every key.
    pub fn list(&self) -> Vec<ApiKey> {
        self.access.list()
    }
}

fn random_failed(why: String) -> ServiceError {
    ServiceError::Store(StoreError::Database(format!("cannot draw random bytes for a key: {why}")))
}

/// `HMAC-SHA256(salt, text)`, before it is finished.
fn mac(salt: &[u8], text: &str) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(salt).expect("HMAC takes a key of any length");
    mac.update(text.as_bytes());
    mac
}

fn digest(salt: &[u8], text: &str) -> Vec<u8> {
    mac(salt, text).finalize().into_bytes().to_vec()
}

/// Whether `text`'s digest is `expected`, compared in constant time.
fn verify(salt: &[u8], text: &str, expected: &[u8]) -> bool {
    mac(salt, text).verify_slice(expected).is_ok()
}

fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hex_decode(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::clock::ManualClock;
    use std::future::Future;

    fn access(dir: &Path, auth_string: Option<&str>) -> (Store, Access) {
        let store = Store::open(dir).unwrap();
        let access = Access::load(&store, auth_string, Arc::new(ManualClock::new(Timestamp::from_micros(1)))).unwrap();
        (store, access)
    }

    fn temp(tag: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("tripwire-access-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn without_keys_or_auth_string_anyone_is_admitted() {
        let dir = temp("open");
        let (_store, access) = access(&dir, None);
        assert!(!access.is_on());
        assert_eq!(access.authenticate(None), Ok(Principal::Anyone));
        assert_eq!(access.authenticate(Some(Credential::Bearer("tw_00_nope"))), Ok(Principal::Anyone));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn keys_admit_their_role_until_revoked_and_are_stored_only_as_digests() {
        let dir = temp("keys");
        let (store, access) = access(&dir, None);
        let (stored, token) = access.mint(&NewApiKey::new("checkout", Role::Emit), Timestamp::from_micros(5)).unwrap();
        assert!(token.starts_with(&format!("tw_{}_", stored.key.id)) && token.len() > 50, "{token}");
        assert!(!stored.digest.contains(&token) && stored.digest.len() == 64);
        let tx = store.begin().unwrap();
        let stored = insert_key(&tx, stored).unwrap().unwrap();
        tx.commit().unwrap();
        access.record(stored).unwrap();
        assert!(access.is_on());
        let principal = access.authenticate(Some(Credential::Bearer(&token))).unwrap();
        assert!(principal.permits(Permission::Emit) && !principal.permits(Permission::Read));
        assert_eq!(access.authenticate(Some(Credential::Token(&token))), Ok(principal.clone()));
        assert_eq!(access.authenticate(None), Err(AccessError::Missing));
        // One character off, or someone else's id: unknown.
        let mut wrong = token.clone();
        let last = wrong.pop().unwrap();
        wrong.push(if last == 'A' { 'B' } else { 'A' });
        assert_eq!(access.authenticate(Some(Credential::Bearer(&wrong))), Err(AccessError::UnknownKey));
        assert_eq!(access.authenticate(Some(Credential::Bearer("tw_0123456789ab_x"))), Err(AccessError::UnknownKey));
        assert_eq!(access.authenticate(Some(Credential::Basic("a:b"))), Err(AccessError::NoAuthString));
        // The same name twice is refused while the first is live.
        let (twin, _) = access.mint(&NewApiKey::new("checkout", Role::Read), Timestamp::from_micros(6)).unwrap();
        let tx = store.begin().unwrap();
        assert!(matches!(insert_key(&tx, twin).unwrap(), Err(ServiceError::Conflict { .. })));
        let revoked = revoke_key(&tx, "checkout", Timestamp::from_micros(7)).unwrap().unwrap();
        tx.commit().unwrap();
        let mut cut_off = Box::pin(access.until_revoked(&principal));
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(cut_off.as_mut().poll(&mut cx).is_pending());
        access.record(revoked).unwrap();
        assert!(cut_off.as_mut().poll(&mut cx).is_ready());
        drop(cut_off);
        assert!(!access.still_admits(&principal));
        assert_eq!(
            access.authenticate(Some(Credential::Bearer(&token))),
            Err(AccessError::Revoked { name: "checkout".into() })
        );
        // Still on after the last key is revoked, and after a restart.
        assert!(access.is_on());
        drop(access);
        drop(store);
        let (_store, again) = self::access(&dir, None);
        assert!(again.is_on());
        assert_eq!(again.list()[0].revoked, Some(Timestamp::from_micros(7)));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_auth_string_admits_an_administrator() {
        let dir = temp("auth-string");
        let (_store, access) = access(&dir, Some("user:pass"));
        assert!(access.is_on());
        assert_eq!(access.authenticate(Some(Credential::Basic("user:pass"))), Ok(Principal::AuthString));
        assert_eq!(access.authenticate(Some(Credential::Token("user:pass"))), Ok(Principal::AuthString));
        assert_eq!(access.authenticate(Some(Credential::Basic("user:pas"))), Err(AccessError::WrongAuthString));
        assert_eq!(access.authenticate(Some(Credential::Basic(""))), Err(AccessError::WrongAuthString));
        assert!(Principal::AuthString.permits(Permission::Manage));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn last_uses_are_written_once_each() {
        let dir = temp("uses");
        let (store, access) = access(&dir, None);
        let (stored, token) = access.mint(&NewApiKey::new("w", Role::Worker), Timestamp::from_micros(5)).unwrap();
        access.record(stored.clone()).unwrap();
        let tx = store.begin().unwrap();
        insert_key(&tx, stored).unwrap().unwrap();
        tx.commit().unwrap();
        assert!(access.unwritten_uses().is_empty());
        access.authenticate(Some(Credential::Bearer(&token))).unwrap();
        let uses = access.unwritten_uses();
        assert_eq!(uses.len(), 1);
        let tx = store.begin().unwrap();
        write_uses(&tx, &uses).unwrap();
        tx.commit().unwrap();
        access.uses_written(&uses);
        assert!(access.unwritten_uses().is_empty());
        assert_eq!(store.keys().unwrap()[0].key.last_used, Some(Timestamp::from_micros(1)));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn keys_are_capped_revoked_ones_included() {
        let dir = temp("cap");
        let (store, access) = access(&dir, None);
        let (template, _) = access.mint(&NewApiKey::new("k", Role::Read), Timestamp::from_micros(5)).unwrap();
        let tx = store.begin().unwrap();
        for i in 0..MAX_API_KEYS {
            let mut key = template.clone();
            key.key.id = format!("{i:012x}");
            key.key.name = format!("k{i}");
            key.key.revoked = Some(Timestamp::from_micros(6));
            tx.put_key(&key).unwrap();
        }
        let (one_more, _) = access.mint(&NewApiKey::new("one-more", Role::Read), Timestamp::from_micros(7)).unwrap();
        let refused = insert_key(&tx, one_more).unwrap().unwrap_err().to_string();
        assert!(refused.contains("at most 10000 API keys"), "{refused}");
        drop(tx);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn hex_round_trips() {
        assert_eq!(hex_decode(&hex_encode(&[0, 1, 254, 255])), Some(vec![0, 1, 254, 255]));
        assert_eq!(hex_decode("abc"), None);
        assert_eq!(hex_decode("zz"), None);
    }
}
