//! `ragd keys`: create, list and revoke API keys and service tokens in the data folder. This works
//! while a server runs on the same folder: both change the key file under one lock, and the server
//! sees a change (a revocation too) on its next request.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use ragd_core::auth::{KeyKind, Role, generate_key};
use ragd_core::settings::Settings;
use ragd_core::types::now_rfc3339;

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Create a key; it is printed once, alone on the last line.
    Create(CreateArgs),
    /// List keys (never their secrets).
    List {
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key by id: refused from the next request on.
    Revoke { id: String },
}

#[derive(Args)]
pub struct CreateArgs {
    /// read, write or admin.
    #[arg(long, value_parser = parse_role)]
    role: Role,
    #[arg(long)]
    tenant: String,
    /// Restrict the key to these collections (comma-separated); default all of the tenant's.
    #[arg(long, value_delimiter = ',')]
    collections: Option<Vec<String>>,
    /// A label for people.
    #[arg(long)]
    name: Option<String>,
    /// Make a service token (sent as `X-Service-Token`) instead of an API key.
    #[arg(long)]
    service: bool,
}

fn parse_role(s: &str) -> Result<Role, String> {
    Role::parse(s).ok_or_else(|| format!("`{s}` is not a role: read, write or admin"))
}

pub async fn run(command: KeysCommand, settings: &Settings) -> anyhow::Result<ExitCode> {
    let store = crate::app::key_store(settings).await?;
    match command {
        KeysCommand::Create(a) => {
            let kind = if a.service { KeyKind::ServiceToken } else { KeyKind::ApiKey };
            let new = generate_key(kind, &a.tenant, a.role, a.collections, a.name, now_rfc3339())?;
            store.insert(new.record.clone()).await?;
            let r = &new.record;
            let scope = r.collections.as_ref().map(|c| c.join(",")).unwrap_or_else(|| "all collections".into());
            let what = if a.service { "service token (send it as X-Service-Token)" } else { "API key (send it as Authorization: Bearer)" };
            eprintln!("created {what} {} — tenant {}, role {}, {scope}", r.id, r.tenant, r.role.as_str());
            eprintln!("it is shown once; only its digest is stored in {}", settings.data_dir.join("keys.json").display());
            if !settings.auth.enabled {
                eprintln!("note: auth.enabled is false, so the server does not ask for keys yet");
            }
            println!("{}", new.secret);
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::List { tenant, json } => {
            let keys: Vec<_> = store.list(tenant.as_deref()).await?.iter().map(|k| k.public()).collect();
            if json {
                println!("{}", serde_json::to_string_pretty(&keys)?);
            } else {
                println!("{:<12}  {:<13}  {:<16}  {:<5}  {:<20}  {}", "ID", "KIND", "TENANT", "ROLE", "CREATED", "STATE");
                for k in &keys {
                    let kind = match k.kind {
                        KeyKind::ApiKey => "api_key",
                        KeyKind::ServiceToken => "service_token",
                    };
                    let state = k.revoked_at.as_ref().map(|t| format!("revoked {t}")).unwrap_or_else(|| "active".into());
                    let created: String = k.created_at.chars().take(19).collect();
                    println!("{:<12}  {:<13}  {:<16}  {:<5}  {:<20}  {}", k.id, kind, k.tenant, k.role.as_str(), created, state);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::Revoke { id } => {
            if store.revoke(&id, now_rfc3339()).await? {
                eprintln!("revoked {id}");
                Ok(ExitCode::SUCCESS)
            } else {
                eprintln!("error: no key `{id}`");
                Ok(ExitCode::FAILURE)
            }
        }
    }
}
