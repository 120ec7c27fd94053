//! `flowlogd setup --kibana URL`: imports the shipped Kibana saved objects (data view and
//! dashboard, `deploy/kibana/flowlogd.ndjson`) through Kibana's saved objects import API.
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;

use crate::secret::Secret;

/// The saved objects, built into the binary so `setup` works from any directory.
pub const KIBANA_OBJECTS: &str = include_str!("../../deploy/kibana/flowlogd.ndjson");

#[derive(Debug, Args)]
pub struct SetupArgs {
    /// Kibana base URL, e.g. `http://127.0.0.1:5601` (add `/s/SPACE` to import into a space).
    #[arg(long)]
    pub kibana: String,
    /// Basic-auth user for Kibana.
    #[arg(long)]
    pub kibana_user: Option<String>,
    /// Environment variable holding the Kibana password (or an API key with --kibana-api-key).
    #[arg(long)]
    pub kibana_password_env: Option<String>,
    /// Environment variable holding a Kibana API key (`Authorization: ApiKey …`).
    #[arg(long)]
    pub kibana_api_key_env: Option<String>,
}

pub fn run(args: SetupArgs) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(import(&args))
}

fn env_secret(var: &str, flag: &str) -> anyhow::Result<Secret> {
    std::env::var(var)
        .map(Secret::new)
        .with_context(|| format!("{flag}: environment variable `{var}` is not set"))
}

async fn import(args: &SetupArgs) -> anyhow::Result<ExitCode> {
    let url = format!(
        "{}/api/saved_objects/_import?overwrite=true",
        args.kibana.trim_end_matches('/')
    );
    let boundary = "flowlogd-saved-objects-boundary";
    let mut body = Vec::with_capacity(KIBANA_OBJECTS.len() + 256);
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"flowlogd.ndjson\"\r\nContent-Type: application/ndjson\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(KIBANA_OBJECTS.as_bytes());
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()?;
    let mut request = client
        .post(&url)
        .header("kbn-xsrf", "true")
        .header(
            "Content-Type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(body);
    if let Some(var) = &args.kibana_api_key_env {
        let key = env_secret(var, "--kibana-api-key-env")?;
        request = request.header("Authorization", format!("ApiKey {}", key.expose()));
    } else if let Some(user) = &args.kibana_user {
        let password = match &args.kibana_password_env {
            Some(var) => Some(env_secret(var, "--kibana-password-env")?),
            None => None,
        };
        request = request.basic_auth(user, password.as_ref().map(|p| p.expose().to_owned()));
    }
    let response = request
        .send()
        .await
        .with_context(|| format!("POST {url}"))?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    let answer: serde_json::Value = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
    if !status.is_success() || answer["success"] != true {
        let excerpt: String = text.chars().take(500).collect();
        anyhow::bail!("Kibana refused the import (HTTP {status}): {excerpt}");
    }
    println!(
        "imported {} saved objects into {}",
        answer["successCount"], args.kibana
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_objects_are_valid_ndjson_with_a_dashboard() {
        let types: Vec<String> = KIBANA_OBJECTS
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["type"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned()
            })
            .collect();
        assert!(types.iter().any(|t| t == "dashboard"), "{types:?}");
        assert!(types.iter().any(|t| t == "index-pattern"), "{types:?}");
    }

    /// A scripted Kibana: checks the request the way Kibana's import API would (xsrf header,
    /// multipart `file` part holding the NDJSON, basic auth) and answers like it.
    #[tokio::test]
    async fn imports_through_the_saved_objects_api() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 65536];
            loop {
                let n = stream.read(&mut buf).await.unwrap();
                request.extend_from_slice(&buf[..n]);
                if n == 0 || request.ends_with(b"--\r\n") {
                    break;
                }
            }
            let body = br#"{"success":true,"successCount":21,"successResults":[]}"#;
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            stream.write_all(head.as_bytes()).await.unwrap();
            stream.write_all(body).await.unwrap();
            String::from_utf8(request).unwrap()
        });
        // SAFETY-free env use: the variable name is unique to this test.
        unsafe { std::env::set_var("FLOWLOGD_TEST_KIBANA_PASSWORD", "s3cret") };
        let args = SetupArgs {
            kibana: format!("http://{addr}/"),
            kibana_user: Some("elastic".into()),
            kibana_password_env: Some("FLOWLOGD_TEST_KIBANA_PASSWORD".into()),
            kibana_api_key_env: None,
        };
        assert_eq!(import(&args).await.unwrap(), ExitCode::SUCCESS);
        let request = server.await.unwrap();
        assert!(
            request.starts_with("POST /api/saved_objects/_import?overwrite=true "),
            "{request}"
        );
        assert!(request.to_lowercase().contains("kbn-xsrf: true"));
        assert!(
            request.to_lowercase().contains(
                "authorization: basic ZWxhc3RpYzpzM2NyZXQ="
                    .to_lowercase()
                    .as_str()
            )
        );
        assert!(request.contains("name=\"file\"; filename=\"flowlogd.ndjson\""));
        assert!(request.contains(KIBANA_OBJECTS.lines().next().unwrap()));
    }
}
