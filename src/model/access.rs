//! Access control: the roles an API key has, what each role may do, and the key records that
//! are listed (never the secret: it is shown once, when the key is made).

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::problems::{JsonPath, Problems};
use super::time::Timestamp;

/// What an API key may do. Roles are not ordered: `read` may not emit, `emit` may not read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Send events (`POST /api/events`, `/api/events/in`) and nothing else: for producers.
    Emit,
    /// Serve flows: register deployments and their triggers, claim runs, heartbeat, complete,
    /// fail, ship logs, and emit.
    Worker,
    /// Every read: each `GET`, Prefect's event filter, and `/api/events/out`.
    Read,
    /// Everything, managing keys included.
    Admin,
}

/// What a request does, as far as access is concerned; each route needs one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Permission {
    /// Send events.
    Emit,
    /// The worker protocol: register deployments and triggers, claim, heartbeat, complete,
    /// fail, ship logs.
    Serve,
    /// Read anything.
    Read,
    /// Change definitions, deployments, filters and runs by hand; manage keys.
    Manage,
}

impl Role {
    /// Every role, in the order the documentation lists them.
    pub const ALL: [Role; 4] = [Role::Emit, Role::Worker, Role::Read, Role::Admin];

    /// Whether a key of this role may do `permission`.
    pub fn permits(self, permission: Permission) -> bool {
        match self {
            Role::Admin => true,
            Role::Emit => permission == Permission::Emit,
            Role::Worker => matches!(permission, Permission::Emit | Permission::Serve),
            Role::Read => permission == Permission::Read,
        }
    }

    /// Its name: `emit`, `worker`, `read` or `admin`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Emit => "emit",
            Role::Worker => "worker",
            Role::Read => "read",
            Role::Admin => "admin",
        }
    }

    /// The least role that permits `permission` (what a refusal tells the client to use).
    pub fn least_for(permission: Permission) -> Role {
        match permission {
            Permission::Emit => Role::Emit,
            Permission::Serve => Role::Worker,
            Permission::Read => Role::Read,
            Permission::Manage => Role::Admin,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(text: &str) -> Result<Role, String> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == text)
            .ok_or_else(|| format!("`{text}` is not a role; use emit, worker, read or admin"))
    }
}

/// The longest key name.
pub const MAX_KEY_NAME_CHARS: usize = 64;
/// Keys a server keeps, revoked ones included (each request looks its key up in memory).
pub const MAX_API_KEYS: usize = 10_000;

/// An API key as listed: who it is for and what it may do. The secret is not part of it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ApiKey {
    /// The public part of the key (the characters after `tw_` and before the next `_`): it
    /// names the key in logs and in `keys revoke`, and is no secret.
    pub id: String,
    /// Unique among the keys not revoked, e.g. `checkout-service`.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// When it was made.
    pub created: Timestamp,
    /// When a request last used it (kept to the minute on disk), if ever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used: Option<Timestamp>,
    /// When it was revoked; a revoked key admits nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<Timestamp>,
}

/// The body of `POST /api/admin/keys`: a key to make.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewApiKey {
    /// Unique among the keys not revoked: letters, digits, `_`, `.`, `:` and `-`, at most 64.
    #[schemars(length(min = 1, max = MAX_KEY_NAME_CHARS), regex(pattern = r"^[A-Za-z0-9_.:-]+$"))]
    pub name: String,
    /// What it may do.
    pub role: Role,
}

impl NewApiKey {
    /// A key for `name` with `role`.
    pub fn new(name: impl Into<String>, role: Role) -> NewApiKey {
        NewApiKey { name: name.into(), role }
    }

    /// Checks the name.
    pub fn check(&self) -> Result<(), Problems> {
        let mut problems = Problems::default();
        let path = JsonPath::root().key("name");
        if self.name.is_empty() {
            problems.add(&path, "a key needs a name, e.g. `checkout-service`");
        } else if self.name.chars().count() > MAX_KEY_NAME_CHARS {
            problems.add(&path, format!("a key name is at most {MAX_KEY_NAME_CHARS} characters"));
        } else if !self.name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-')) {
            problems.add(&path, "a key name may hold only letters, digits, `_`, `.`, `:` and `-`");
        }
        problems.into_result(())
    }
}

/// A key just made: its record, and the secret token, shown this once and never again.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CreatedApiKey {
    /// The key's record.
    #[serde(flatten)]
    pub key: ApiKey,
    /// The whole key, `tw_<id>_<secret>`: send it as `Authorization: Bearer <token>`.
    pub token: String,
}

/// What every API key starts with.
pub const KEY_PREFIX: &str = "tw_";

/// The id of a token shaped like an API key (`tw_<id>_<secret>`), or `None`.
pub fn key_id(token: &str) -> Option<&str> {
    let rest = token.strip_prefix(KEY_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    (!id.is_empty() && !secret.is_empty() && id.bytes().all(|b| b.is_ascii_hexdigit())).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_permit_what_the_documentation_says() {
        use Permission::*;
        let table = [
            (Role::Emit, [true, false, false, false]),
            (Role::Worker, [true, true, false, false]),
            (Role::Read, [false, false, true, false]),
            (Role::Admin, [true, true, true, true]),
        ];
        for (role, allowed) in table {
            for (permission, allowed) in [Emit, Serve, Read, Manage].into_iter().zip(allowed) {
                assert_eq!(role.permits(permission), allowed, "{role} {permission:?}");
            }
        }
        for p in [Emit, Serve, Read, Manage] {
            assert!(Role::least_for(p).permits(p));
        }
    }

    #[test]
    fn roles_read_back_by_name() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
            assert_eq!(serde_json::to_value(role).unwrap(), role.as_str());
        }
        assert!("root".parse::<Role>().unwrap_err().contains("emit, worker, read or admin"));
    }

    #[test]
    fn key_names_are_checked() {
        assert!(NewApiKey::new("checkout-service", Role::Emit).check().is_ok());
        for bad in ["", "has space", "é", &"x".repeat(65)] {
            let e = NewApiKey::new(bad, Role::Emit).check().unwrap_err().to_string();
            assert!(e.contains("$.name"), "{bad}: {e}");
        }
    }

    #[test]
    fn key_ids_are_read_off_tokens() {
        assert_eq!(key_id("tw_0a1b2c3d4e5f_secret"), Some("0a1b2c3d4e5f"));
        for not_a_key in ["", "tw_", "tw__x", "tw_abc", "tw_abc_", "tw_xyz_secret", "pnu_abc_def", "0a1b_c"] {
            assert_eq!(key_id(not_a_key), None, "{not_a_key}");
        }
    }
}
