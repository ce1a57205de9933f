//! The `arcane` command line.

use std::io::Write;

use arcane_deploy::{JobTemplateOptions, crd_yaml, manifests};
use arcane_runner::{RunArgs, Runner};
use clap::{Parser, Subcommand};

use crate::Error;
use crate::kinds::kind_manifest;

/// Run Arcane's built-in stream kinds, and print what Kubernetes needs to run them.
///
/// Without a subcommand, `arcane` runs the stream described by the `STREAMCONTEXT__*`
/// environment (what the Arcane operator's Jobs set), like `arcane run`.
#[derive(Debug, Parser)]
#[command(
    name = "arcane",
    version,
    args_conflicts_with_subcommands = true,
    after_help = arcane_runner::EXIT_CODES_HELP
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// `run` flags, when no subcommand is given.
    #[command(flatten)]
    pub run: RunArgs,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a stream: `arcane run --spec stream.yaml` (a stream resource, or a bare spec with
    /// --kind), or the `STREAMCONTEXT__*` environment.
    #[command(after_help = arcane_runner::RUN_HELP)]
    Run(Box<RunArgs>),
    /// Retire a stream: drop what it keeps on its upstream system once the stream is deleted,
    /// e.g. a `postgres-cdc` stream's replication slot (which otherwise keeps WAL on the
    /// server forever) and publication. Takes the same --spec/--kind (or `STREAMCONTEXT__*`
    /// environment) as `run`; idempotent (what is gone already is reported, exit 0); prints
    /// one line per object. Stop the stream first: a slot in use is not dropped (exit 1).
    Retire(Box<RunArgs>),
    /// Show what a Parquet sink committed at a location: generation, files, rows, the
    /// checkpoint its source resumes from, the schema and the first rows.
    ///
    /// With --files, print only the committed files of the current generation, one URL (or
    /// absolute local path) per line: exactly what a reader should open, e.g.
    /// DuckDB's `read_parquet([...])`. Globbing the prefix also reads retired generations and
    /// misses the current one when it is an overwrite generation.
    Show {
        /// The sink's `url` (`arcane-out/orders`, `s3://bucket/prefix`, ...).
        url: String,
        /// Rows to print.
        #[arg(long, default_value_t = 10)]
        limit: usize,
        /// Print only the committed files, one per line (nothing else on stdout); fails when
        /// the location does not exist or has no manifest.
        #[arg(long, conflicts_with = "limit")]
        files: bool,
        /// Object-store option `KEY=VALUE` (as in the sink's `storageOptions`); repeatable.
        /// `AWS_*`, `AZURE_*` and `GOOGLE_*` environment variables apply too.
        #[arg(long = "storage-option", value_name = "KEY=VALUE")]
        storage_options: Vec<String>,
    },
    /// Out-of-process source plugins (see docs/plugins.md).
    #[cfg(feature = "plugin")]
    #[command(subcommand)]
    Plugin(crate::plugin::PluginCommand),
    /// List the stream kinds this binary hosts, one per line with a description.
    Kinds {
        /// Print JSON instead.
        #[arg(long)]
        json: bool,
    },
    /// Print the JSON Schema of a kind's spec (generated from its Rust types).
    SpecSchema {
        /// The kind (`arcane kinds` lists them).
        kind: String,
    },
    /// Print the kind's CustomResourceDefinition as YAML (what `deploy/chart/crds/` holds).
    Crd {
        /// The kind (`arcane kinds` lists them).
        kind: String,
    },
    /// Print everything else the kind needs in a namespace as YAML: ServiceAccount, Role and
    /// RoleBinding (get/patch jobs), the operator's StreamClass, and the streaming and
    /// backfill StreamingJobTemplates (and with `--backfill-shards`, the Indexed-Job backfill
    /// templates of sharded backfills).
    Manifests {
        /// The kind (`arcane kinds` lists them).
        kind: String,
        /// Namespace of the streams.
        #[arg(long, default_value = "default")]
        namespace: String,
        /// Container image of this binary.
        #[arg(long, default_value = arcane_deploy::job::DEFAULT_IMAGE)]
        image: String,
        /// ServiceAccount of the stream Jobs.
        #[arg(long, default_value = arcane_deploy::rbac::DEFAULT_SERVICE_ACCOUNT)]
        service_account: String,
        /// The runner's drain deadline (humantime); terminationGracePeriodSeconds is longer.
        #[arg(long, default_value = "30s")]
        drain_timeout: String,
        /// `backoffLimit` of the Jobs (exit code 1 counts, exit code 2 does not).
        #[arg(long, default_value_t = arcane_deploy::job::DEFAULT_BACKOFF_LIMIT)]
        backoff_limit: i32,
        /// Shard counts (comma-separated, each at least 2) for which to add a sharded backfill
        /// template, `arcane-KIND-backfill-shards-N`: an Indexed Job of N completions that
        /// streams with `backfillShards: N` pick with `backfillJobTemplateRef`.
        #[arg(long, value_delimiter = ',', value_name = "N,...")]
        backfill_shards: Vec<u32>,
    },
}

/// Parse the process's arguments and run; the process's exit code.
pub fn main_with(runner: Runner) -> std::process::ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return arcane_runner::exit_on_cli_error(e),
    };
    let result = match cli.command {
        None => return runner.run_with_args(cli.run),
        Some(Command::Run(args)) => return runner.run_with_args(*args),
        #[cfg(feature = "plugin")]
        Some(Command::Plugin(command)) => return crate::plugin::run(command),
        Some(Command::Kinds { json }) => kinds(&runner, json),
        Some(Command::Retire(args)) => retire(&runner, &args),
        Some(Command::Show {
            url,
            limit,
            files,
            storage_options,
        }) => show(&url, &storage_options, limit, files),
        Some(Command::SpecSchema { kind }) => spec_schema(&runner, &kind),
        Some(Command::Crd { kind }) => {
            kind_manifest(&runner, &kind).and_then(|k| Ok(crd_yaml(&k)?))
        }
        Some(Command::Manifests {
            kind,
            namespace,
            image,
            service_account,
            drain_timeout,
            backoff_limit,
            backfill_shards,
        }) => {
            let drain_timeout =
                arcane_runner::config::parse_duration(&drain_timeout, "--drain-timeout")
                    .map_err(|e| Error::Stream(Box::new(e)));
            drain_timeout.and_then(|drain_timeout| {
                let opts = JobTemplateOptions {
                    service_account,
                    drain_timeout,
                    backoff_limit,
                    backfill_shard_counts: backfill_shards,
                    ..JobTemplateOptions::new(image)
                };
                let kind = kind_manifest(&runner, &kind)?;
                let generated =
                    manifests(&kind, &namespace, &opts).map_err(Error::from_manifest_options)?;
                Ok(generated.to_yaml()?)
            })
        }
    };
    match result.and_then(|out| {
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(out.as_bytes())?;
        if !out.is_empty() && !out.ends_with('\n') {
            stdout.write_all(b"\n")?;
        }
        stdout.flush()?;
        Ok(())
    }) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // The reader went away (`arcane kinds | head`): stop quietly, as Unix tools do.
        Err(Error::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            #[allow(clippy::print_stderr)]
            {
                eprintln!("error: {e}");
            }
            std::process::ExitCode::from(arcane_core::ExitCode::Fatal as u8)
        }
    }
}

fn kinds(runner: &Runner, json: bool) -> Result<String, Error> {
    let kinds = runner.registry().kinds();
    if json {
        return Ok(serde_json::to_string_pretty(&kinds)?);
    }
    let width = kinds.iter().map(|k| k.name.len()).max().unwrap_or(0);
    Ok(kinds
        .iter()
        .map(|k| format!("{:width$}  {}\n", k.name, k.description))
        .collect())
}

fn show(url: &str, options: &[String], limit: usize, files: bool) -> Result<String, Error> {
    let mut map = std::collections::BTreeMap::new();
    for option in options {
        let (k, v) = option.split_once('=').ok_or_else(|| {
            Error::Stream(Box::new(arcane_core::Error::config(
                "--storage-option",
                format!("{option:?} is not KEY=VALUE, e.g. aws_region=eu-west-1"),
            )))
        })?;
        map.insert(k.trim().to_string(), v.to_string());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    if files {
        return runtime.block_on(crate::show::files(url, &map));
    }
    runtime.block_on(crate::show::show(url, &map, limit))
}

fn retire(runner: &Runner, args: &RunArgs) -> Result<String, Error> {
    let stream = |e| Error::Stream(Box::new(e));
    let ctx = args.context(None).map_err(stream)?.context;
    let kind = runner
        .registry()
        .canonical_name(&ctx.stream_kind)
        .map(str::to_string)
        .ok_or_else(|| Error::UnknownKind {
            kind: ctx.stream_kind.clone(),
            known: runner
                .registry()
                .kinds()
                .into_iter()
                .map(|k| k.name)
                .collect(),
        })?;
    match kind.as_str() {
        #[cfg(feature = "postgres-cdc")]
        "postgres-cdc" => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(crate::kinds::retire_postgres_cdc(&ctx))
            .map_err(stream),
        other => Ok(format!(
            "stream kind {other} keeps nothing on its upstream system to drop (its position is in the sink's commit manifest); nothing to retire"
        )),
    }
}

fn spec_schema(runner: &Runner, kind: &str) -> Result<String, Error> {
    let manifest = kind_manifest(runner, kind)?;
    Ok(serde_json::to_string_pretty(&manifest.spec_schema)?)
}
