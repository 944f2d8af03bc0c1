//! `marquee admin`: account chores for people with shell access to the
//! machine. It works on the data directory of a stopped server: fjall lets
//! one process open a directory at a time, so against a running server it
//! says so and changes nothing (a running server's accounts are managed
//! through its HTTP API).

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, Subcommand};

use crate::auth::{Accounts, AuthError, Passwords, Role, generate_password};
use crate::bus::Bus;
use crate::clock;
use crate::metrics::Metrics;
use crate::store::{Store, StoreError, StoreOptions};

#[derive(Debug, Args)]
pub struct AdminArgs {
    /// The data directory of a stopped Marquee [default: ./data]
    #[arg(long, env = "MARQUEE_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub action: AdminAction,
}

#[derive(Debug, Subcommand)]
pub enum AdminAction {
    /// Create an account; without --password-stdin a password is generated and shown once.
    CreateUser {
        username: String,
        #[arg(long, value_enum, default_value = "admin")]
        role: Role,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Give an account a new password; without --password-stdin one is generated and shown once.
    ResetPassword {
        username: String,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// List the accounts: user name, role, whether disabled, when created.
    ListUsers,
}

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("cannot open the data directory {dir}: {source}")]
    Open { dir: PathBuf, source: StoreError },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("no password on standard input")]
    NoPassword,
}

/// Runs one admin action, reading a password from `input` if asked to and
/// writing what a person needs to see to `output`.
pub async fn run(
    args: AdminArgs,
    input: &mut dyn BufRead,
    output: &mut dyn Write,
) -> Result<(), AdminError> {
    let dir = args.data_dir.unwrap_or_else(|| PathBuf::from("./data"));
    let metrics = Arc::new(Metrics::default());
    let options = StoreOptions {
        data_dir: dir.clone(),
        // Never trim the change log: the server may keep more than the default.
        change_log_window: u64::MAX,
        tables: Vec::new(),
        fail_persist_after: None,
        address: Default::default(),
    };
    let store = Store::open(
        options,
        Bus::new(crate::bus::QueueLimit::events(1), metrics.clone()),
        metrics,
    )
    .map_err(|source| AdminError::Open { dir, source })?;
    let accounts = Accounts::new(store.clone(), Passwords::new());
    let done = act(&accounts, args.action, input, output).await;
    store.shutdown().await;
    done
}

async fn act(
    accounts: &Accounts,
    action: AdminAction,
    input: &mut dyn BufRead,
    output: &mut dyn Write,
) -> Result<(), AdminError> {
    match action {
        AdminAction::CreateUser {
            username,
            role,
            password_stdin,
        } => {
            let (password, generated) = password(password_stdin, input)?;
            let account = accounts.create(&username, role, &password).await?;
            writeln!(
                output,
                "Created '{}' ({}).",
                account.username,
                account.role.as_str()
            )?;
            if generated {
                writeln!(output, "Password (shown only now): {password}")?;
            }
        }
        AdminAction::ResetPassword {
            username,
            password_stdin,
        } => {
            let (password, generated) = password(password_stdin, input)?;
            let username = accounts.set_password(&username, &password).await?;
            writeln!(output, "New password set for '{username}'.")?;
            if generated {
                writeln!(output, "Password (shown only now): {password}")?;
            }
        }
        AdminAction::ListUsers => {
            let list = accounts.list()?;
            writeln!(
                output,
                "{:<24} {:<8} {:<9} created",
                "user", "role", "disabled"
            )?;
            for account in list {
                writeln!(
                    output,
                    "{:<24} {:<8} {:<9} {}",
                    account.username,
                    account.role.as_str(),
                    if account.disabled { "yes" } else { "no" },
                    clock::format_millis(account.created_ms)
                )?;
            }
        }
    }
    Ok(())
}

/// The password to set: the first line of `input`, or a generated one.
fn password(from_input: bool, input: &mut dyn BufRead) -> Result<(String, bool), AdminError> {
    if !from_input {
        return Ok((generate_password()?, true));
    }
    let mut line = String::new();
    input.read_line(&mut line)?;
    let password = line.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        return Err(AdminError::NoPassword);
    }
    Ok((password.to_owned(), false))
}
