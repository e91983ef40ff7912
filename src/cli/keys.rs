//! `tripwire keys create|list|revoke`: API keys, on a running server (`--api`, with an admin
//! key) or on a data directory no server has open (`--data DIR`, to make the first key).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use crate::model::{ApiKey, CreatedApiKey, NewApiKey, Role};
use crate::service::access::OfflineKeys;

use super::remote::{self, ApiArgs, Failure};

/// Arguments of `tripwire keys`.
#[derive(Debug, Args)]
pub struct KeysArgs {
    #[command(flatten)]
    api: ApiArgs,
    /// Work on this data directory instead of a running server (which must not have it open).
    #[arg(long, global = true, value_name = "DIR")]
    data: Option<PathBuf>,
    #[command(subcommand)]
    command: KeysCommand,
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Make a key and print it (its only showing: only a digest is stored). The key goes to
    /// stdout, alone on its line (or the whole record with --json); the rest to stderr.
    Create {
        /// What it may do: emit, worker, read or admin.
        #[arg(long)]
        role: Role,
        /// Who it is for, e.g. `checkout-service` (unique among keys not revoked).
        #[arg(long)]
        name: String,
        /// Print the whole record, token included, as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the keys (a table, or JSON lines with --json); never their secrets.
    List {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key by name or id: from the next request on it admits nothing, and its open
    /// WebSocket connections are closed.
    Revoke {
        /// The key's name (or its id).
        #[arg(value_name = "NAME")]
        which: String,
    },
}

/// Runs `tripwire keys ...`.
pub fn run(args: KeysArgs) -> ExitCode {
    match args.data {
        Some(dir) => match offline(&dir, args.command) {
            Ok(()) => ExitCode::SUCCESS,
            Err(failure) => remote::report(failure),
        },
        None => remote::run(&args.api, |client| async move {
            match args.command {
                KeysCommand::Create { role, name, json } => {
                    created(&client.create_key(&NewApiKey::new(name, role)).await?, json)
                }
                KeysCommand::List { json } => listed(&client.keys().await?, json),
                KeysCommand::Revoke { which } => revoked(&client.revoke_key(&which).await?),
            }
        }),
    }
}

fn offline(dir: &std::path::Path, command: KeysCommand) -> Result<(), Failure> {
    let keys = OfflineKeys::open(dir).map_err(|e| {
        Failure::usage(format!(
            "cannot open the data in {}: {e} (if a server is running on it, drop --data and use --api with an \
             admin key)",
            dir.display()
        ))
    })?;
    let failed = |e: crate::service::ServiceError| Failure::usage(e.to_string());
    match command {
        KeysCommand::Create { role, name, json } => {
            created(&keys.create(&NewApiKey::new(name, role)).map_err(failed)?, json)
        }
        KeysCommand::List { json } => listed(&keys.list(), json),
        KeysCommand::Revoke { which } => revoked(&keys.revoke(&which).map_err(failed)?),
    }
}

fn created(created: &CreatedApiKey, json: bool) -> Result<(), Failure> {
    let key = &created.key;
    eprintln!(
        "made the `{}` key `{}` (id {}). This is the only time it is shown: keep it now, e.g. in \
         TRIPWIRE_API_KEY. Clients send it as `Authorization: Bearer <key>`.",
        key.role, key.name, key.id
    );
    if json {
        remote::json_line(created)
    } else {
        remote::line(&created.token)
    }
}

fn listed(keys: &[ApiKey], json: bool) -> Result<(), Failure> {
    if json {
        return keys.iter().try_for_each(remote::json_line);
    }
    let rows: Vec<Vec<String>> = keys
        .iter()
        .map(|k| {
            let when = |t: Option<crate::model::Timestamp>| t.map_or_else(|| "-".to_owned(), |t| t.to_string());
            vec![
                k.name.clone(),
                k.role.to_string(),
                k.id.clone(),
                k.created.to_string(),
                when(k.last_used),
                when(k.revoked),
            ]
        })
        .collect();
    remote::table(&["NAME", "ROLE", "ID", "CREATED", "LAST USED", "REVOKED"], &rows)
}

fn revoked(key: &ApiKey) -> Result<(), Failure> {
    eprintln!("revoked the `{}` key `{}` (id {})", key.role, key.name, key.id);
    remote::json_line(key)
}
