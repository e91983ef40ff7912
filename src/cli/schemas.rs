//! `tripwire schemas [--out DIR]`: writes the JSON Schemas of the public formats.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::model::schema;

/// Arguments of `tripwire schemas`.
#[derive(Debug, Args)]
pub struct SchemasArgs {
    /// The directory to write the schema files to (created when missing).
    #[arg(long, value_name = "DIR", default_value = "schemas")]
    out: PathBuf,
}

/// Writes every schema to `--out`, printing each path written.
pub fn run(args: SchemasArgs) -> ExitCode {
    if let Err(e) = std::fs::create_dir_all(&args.out) {
        eprintln!("error: {}: cannot create the directory: {e}", args.out.display());
        return ExitCode::FAILURE;
    }
    let mut written = Vec::new();
    for (name, value) in schema::all() {
        let path = args.out.join(name);
        if let Err(e) = std::fs::write(&path, schema::to_text(&value)) {
            eprintln!("error: {}: cannot write the schema: {e}", path.display());
            return ExitCode::FAILURE;
        }
        written.push(path);
    }
    // Every file is written before anything is printed: a closed stdout (`tripwire schemas |
    // head`) only stops the listing.
    for path in written {
        if super::remote::line(&path.display().to_string()).is_err() {
            break;
        }
    }
    ExitCode::SUCCESS
}
