//! A file store using attachments: `put {name}` with one attachment keeps
//! it, `get {name}` returns it as an attachment, `list` names what is kept.
//! Files live in a temporary directory for the life of the process.
//!
//!     cargo run --release -p pycom-client --example file_service
//!     target/release/pycomctl call com.example.files put '{"name": "hosts"}' --attach /etc/hosts
//!     target/release/pycomctl call com.example.files get '{"name": "hosts"}' --save-attachments /tmp/out

use pycom_client::service::{Interface, Method, Reply, Service};
use pycom_client::{Binary, Code, Fault};
use serde_json::json;
use std::path::PathBuf;
use std::sync::Arc;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().with_writer(std::io::stderr).init();
    let dir = Arc::new(tempfile::tempdir()?);
    let running = Service::builder("/com/example/files")
        .interface(files_interface(dir.path().to_path_buf()))
        .start()?;
    println!("file service on {}", running.endpoint());
    let mut signals =
        signal_hook::iterator::Signals::new([signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM])?;
    signals.forever().next();
    running.stop();
    Ok(())
}

/// Names are plain file names: no path separators, no dot files.
fn checked_name(name: &str) -> Result<&str, Fault> {
    if name.is_empty() || name.starts_with('.') || name.contains(['/', '\\']) {
        return Err(Fault::bad_request(format!("'{name}' is not a plain file name")));
    }
    Ok(name)
}

fn internal(e: std::io::Error) -> Fault {
    Fault::new(Code::Unknown, e.to_string())
}

pub fn files_interface(dir: PathBuf) -> Interface {
    let (put_dir, get_dir, list_dir) = (dir.clone(), dir.clone(), dir);
    Interface::new("com.example.files")
        .doc("Keeps files sent as attachments.")
        .method(
            Method::new("put", move |req| {
                let name: String = req.arg("name")?;
                let [file] = req.attachments.as_slice() else {
                    return Err(Fault::bad_request("put: send exactly one attachment"));
                };
                let size = file.len();
                file.save(put_dir.join(checked_name(&name)?)).map_err(internal)?;
                Ok(json!({"name": name, "size": size}).into())
            })
            .required(&["name"])
            .doc("Keep the one attachment under a name."),
        )
        .method(
            Method::new("get", move |req| {
                let name: String = req.arg("name")?;
                let path = get_dir.join(checked_name(&name)?);
                if !path.is_file() {
                    return Err(Fault::not_found(format!("no file named '{name}'")));
                }
                let file = Binary::from_path(&path).map_err(internal)?;
                Ok(Reply::new(json!({"name": name, "size": file.len()})).attach(file))
            })
            .required(&["name"])
            .doc("Return a kept file as an attachment."),
        )
        .method(
            Method::new("list", move |_req| {
                let mut names: Vec<String> = std::fs::read_dir(&list_dir)
                    .map_err(internal)?
                    .filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .collect();
                names.sort();
                Ok(json!(names).into())
            })
            .doc("Names of the kept files."),
        )
}
