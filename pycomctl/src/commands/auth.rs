//! login, logout, whoami, auth passwd, auth check: pycomd's access control
//! (PROTOCOL.md 7) from the terminal.
//!
//! The token `login` gets is saved owner-only (see `token.rs`) and carried
//! by every later command; `PYCOM_TOKEN` overrides it. Passwords are read
//! from the terminal without echo, or from the first line of standard input
//! with `--password-stdin`; they are never taken as arguments (which other
//! users can see in the process list).

use super::Failure;
use crate::output;
use crate::token::{self, Source};
use crate::Cli;
use pycom_client::auth::{self as access, Caller};
use pycom_client::Context;
use serde_json::json;
use std::io::BufRead;

pub fn login(
    cli: &Cli,
    ctx: &Context,
    user: Option<&str>,
    password_stdin: bool,
    print_token: bool,
    carried: Option<&Source>,
) -> Result<(), Failure> {
    let user = match user {
        Some(user) => user.to_string(),
        None => std::env::var("USER")
            .ok()
            .filter(|u| !u.is_empty())
            .ok_or_else(|| Failure::Usage("give the USER to log in as ($USER is not set)".into()))?,
    };
    check_user(&user)?;
    // Where the token goes, before the password is asked for.
    let path = if print_token {
        None
    } else {
        Some(token::path().map_err(Failure::Usage)?)
    };
    let password = if password_stdin {
        password_from_stdin()?
    } else {
        password_from_tty(&format!("Password for {user}: "))?
    };
    let login = ctx.login(&user, &password)?;
    let Some(path) = path else {
        if cli.json() {
            output::json(&json!({
                "token": login.token,
                "expires_ms": login.expires_ms,
                "name": login.caller.name,
                "roles": login.caller.roles,
            }))?;
        } else {
            output::line(&login.token)?;
        }
        return Ok(());
    };
    token::save(&path, &login.token)
        .map_err(|e| Failure::Usage(format!("cannot save the token in {}: {e}", path.display())))?;
    if cli.json() {
        output::json(&json!({
            "name": login.caller.name,
            "roles": login.caller.roles,
            "expires_ms": login.expires_ms,
            "token_file": path,
        }))?;
    } else {
        output::line(format_args!(
            "logged in as {} until {}; token saved in {}",
            described(&login.caller),
            utc(login.expires_ms),
            path.display()
        ))?;
    }
    if carried == Some(&Source::Env) {
        output::note(format_args!(
            "pycomctl: {} is set: commands carry its token, not the one just saved",
            token::ENV
        ));
    }
    Ok(())
}

pub fn logout(cli: &Cli, ctx: &Context, carried: Option<&Source>) -> Result<(), Failure> {
    let Some(source) = carried else {
        if cli.json() {
            output::json(&json!({"logged_out": false}))?;
        } else {
            output::line("not logged in: no token to end")?;
        }
        return Ok(());
    };
    let token = ctx.token().unwrap_or_default();
    // The saved token goes whatever pycomd answers: it is the one being
    // logged out, or the same one in both places.
    let removed = match token::path() {
        Ok(path) => {
            let same = matches!(source, Source::File(_))
                || token::load(&path).ok().flatten().as_deref() == Some(token.as_str());
            if same {
                token::remove(&path).map_err(|e| {
                    Failure::Usage(format!("cannot remove the token file {}: {e}", path.display()))
                })?
            } else {
                false
            }
        }
        Err(_) => false,
    };
    let already_gone = match ctx.logout() {
        Ok(()) => false,
        // pycomd no longer knew it (expired, or ended elsewhere): as good.
        Err(pycom_client::Error::AccessDenied(_)) => true,
        Err(e) => {
            if removed {
                output::note("pycomctl: the saved token was removed, but pycomd could not be told:");
            }
            return Err(e.into());
        }
    };
    if cli.json() {
        output::json(&json!({"logged_out": true, "token_file_removed": removed}))?;
    } else if already_gone {
        output::line("logged out (pycomd no longer knew the token)")?;
    } else {
        output::line("logged out")?;
    }
    if *source == Source::Env {
        output::note(format_args!(
            "pycomctl: {} is still set in your environment: unset it",
            token::ENV
        ));
    }
    Ok(())
}

pub fn whoami(cli: &Cli, ctx: &Context, carried: Option<&Source>) -> Result<(), Failure> {
    let Some(source) = carried else {
        return Err(Failure::Client(pycom_client::Error::AccessDenied(format!(
            "not logged in: no token in {} or the token file (see pycomctl login)",
            token::ENV
        ))));
    };
    let caller = ctx.whoami()?;
    if cli.json() {
        output::json(&json!({
            "name": caller.name,
            "roles": caller.roles,
            "token_from": source.to_string(),
        }))?;
    } else {
        let roles = if caller.roles.is_empty() {
            "-".to_string()
        } else {
            caller.roles.join(",")
        };
        output::table(
            &["NAME", "ROLES", "TOKEN FROM"],
            &[vec![caller.name, roles, source.to_string()]],
        )?;
    }
    Ok(())
}

pub fn check(cli: &Cli, ctx: &Context, user: Option<&str>) -> Result<(), Failure> {
    if let Some(user) = user {
        check_user(user)?;
    }
    let policy = ctx.check(user)?;
    // The policy's shape is pycomd's to say: shown as it comes, indented.
    let _ = cli;
    output::json(&policy)?;
    Ok(())
}

/// Print `USER:$argon2id$...` for the users file.
pub fn passwd(user: &str, password_stdin: bool) -> Result<(), Failure> {
    check_user(user)?;
    let password = if password_stdin {
        password_from_stdin()?
    } else {
        let first = password_from_tty(&format!("New password for {user}: "))?;
        let again = password_from_tty("Again: ")?;
        if first != again {
            return Err(Failure::Usage("the two passwords differ: nothing printed".into()));
        }
        first
    };
    if password.is_empty() {
        return Err(Failure::Usage("the password is empty".into()));
    }
    access::check_len("the password", &password, access::MAX_PASSWORD_BYTES).map_err(Failure::Usage)?;
    let hash = access::hash_password(&password).map_err(|e| {
        Failure::Client(pycom_client::Error::Data(format!(
            "cannot hash the password: {e}"
        )))
    })?;
    output::line(format_args!("{user}:{hash}"))?;
    Ok(())
}

/// A user name fit for a users file line.
fn check_user(user: &str) -> Result<(), Failure> {
    if user.is_empty() {
        return Err(Failure::Usage("USER is empty".into()));
    }
    access::check_len("USER", user, access::MAX_USER_BYTES).map_err(Failure::Usage)?;
    if user.contains(':') || user.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Failure::Usage(format!(
            "USER '{}' has a ':', white space or a control character: a users file cannot hold it",
            user.escape_debug()
        )));
    }
    Ok(())
}

fn password_from_tty(prompt: &str) -> Result<String, Failure> {
    rpassword::prompt_password(prompt).map_err(|e| {
        Failure::Usage(format!(
            "cannot read a password from the terminal ({e}): use --password-stdin"
        ))
    })
}

/// The first line of standard input, without its line end.
fn password_from_stdin() -> Result<String, Failure> {
    let mut line = String::new();
    let read = std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| Failure::Usage(format!("cannot read the password from standard input: {e}")))?;
    if read == 0 {
        return Err(Failure::Usage("--password-stdin: standard input is empty".into()));
    }
    let password = line.strip_suffix('\n').unwrap_or(&line);
    let password = password.strip_suffix('\r').unwrap_or(password);
    Ok(password.to_string())
}

/// `alice (roles: billing, ops)`.
fn described(caller: &Caller) -> String {
    if caller.roles.is_empty() {
        format!("{} (no roles)", caller.name)
    } else {
        format!("{} (roles: {})", caller.name, caller.roles.join(", "))
    }
}

/// A unix time in ms as `2026-11-26 06:52:34 UTC`.
fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_times_read_as_utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(1_798_251_154_999), "2026-12-26 02:12:34 UTC");
    }

    #[test]
    fn user_names_fit_a_users_file() {
        assert!(check_user("svc-billing").is_ok());
        for bad in ["", "a:b", "a b", "a\nb"] {
            assert!(matches!(check_user(bad), Err(Failure::Usage(_))), "{bad:?}");
        }
        assert!(check_user(&"x".repeat(access::MAX_USER_BYTES + 1)).is_err());
    }
}
