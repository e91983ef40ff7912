//! API keys: their records, each with the keyed digest of its secret (never the secret), and
//! the key of that digest (`key_salt` in `meta`, made once per data directory).
//!
//! Layout: `api_keys`: key id → [`StoredKey`], JSON.

use redb::{ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::model::ApiKey;

use super::{all_values, by_name, encode, Store, StoreError, Tx, META};

pub(super) const API_KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("api_keys");
const SALT_KEY: &str = "key_salt";

/// A key as stored: its record and the HMAC-SHA256 of the whole token under the data
/// directory's salt, in hex.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredKey {
    /// The record that is listed.
    #[serde(flatten)]
    pub key: ApiKey,
    /// `HMAC-SHA256(key_salt, token)`, hex.
    pub digest: String,
}

impl Store {
    /// Every key, revoked ones included, by id.
    pub fn keys(&self) -> Result<Vec<StoredKey>, StoreError> {
        all_values(&self.read()?.open_table(API_KEYS)?, "API key")
    }

    /// The salt that key digests are made with, once one was written.
    pub fn key_salt(&self) -> Result<Option<Vec<u8>>, StoreError> {
        let rx = self.read()?;
        let meta = rx.open_table(META)?;
        let found = meta.get(SALT_KEY)?;
        Ok(found.map(|v| v.value().to_vec()))
    }
}

impl Tx {
    /// Stores a key's record (a new key, a revocation, a later last-used time).
    pub fn put_key(&self, key: &StoredKey) -> Result<(), StoreError> {
        self.writable(API_KEYS)?.insert(key.key.id.as_str(), encode(key).as_slice())?;
        Ok(())
    }

    /// The key with this id.
    pub fn key(&self, id: &str) -> Result<Option<StoredKey>, StoreError> {
        by_name(&self.tx.open_table(API_KEYS)?, id, "API key")
    }

    /// Every key, by id.
    pub fn keys(&self) -> Result<Vec<StoredKey>, StoreError> {
        all_values(&self.tx.open_table(API_KEYS)?, "API key")
    }

    /// Writes the salt of key digests, unless one is stored already; answers the one stored.
    pub fn init_key_salt(&self, salt: &[u8]) -> Result<Vec<u8>, StoreError> {
        let mut meta = self.writable(META)?;
        if let Some(found) = meta.get(SALT_KEY)? {
            return Ok(found.value().to_vec());
        }
        meta.insert(SALT_KEY, salt)?;
        Ok(salt.to_vec())
    }
}
