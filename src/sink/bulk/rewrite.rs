//! Deleting the documents of a rewritten blob (`on_rewrite = "replace"`): a refresh of the
//! indices it may have written to, then `_delete_by_query` on its path field.
use elasticsearch::http::Method;
use serde_json::{Value, json};

use super::setup::status_error;
use super::{BulkSink, SinkError, error_summary, excerpt};

impl BulkSink {
    /// Deletes every document indexed from one blob (`field` equal to `path`, e.g.
    /// `log.file.path`) from the indices matching `indices`, for a blob rewritten with other
    /// content. Refreshes those indices first, so that documents indexed moments ago are
    /// found too, and waits for the deletion. Returns how many documents were deleted.
    pub async fn delete_blob_documents(
        &self,
        indices: &str,
        field: &str,
        path: &str,
    ) -> Result<u64, SinkError> {
        let what = format!("deleting the documents of rewritten blob {path} from {indices}");
        let lenient = [("ignore_unavailable", "true"), ("allow_no_indices", "true")];
        let (status, body) = self
            .request_with_query(
                Method::Post,
                &format!("{indices}/_refresh"),
                &lenient,
                None,
                &what,
            )
            .await?;
        if !(200..300).contains(&status) {
            return Err(status_error(&what, status, &body));
        }
        let query = json!({"query": {"term": {field: path}}});
        let (status, body) = self
            .request_with_query(
                Method::Post,
                &format!("{indices}/_delete_by_query"),
                &[
                    lenient[0],
                    lenient[1],
                    ("conflicts", "proceed"),
                    ("refresh", "true"),
                    ("wait_for_completion", "true"),
                ],
                Some(&query),
                &what,
            )
            .await?;
        if !(200..300).contains(&status) {
            return Err(status_error(&what, status, &body));
        }
        let answer: Value = serde_json::from_slice(&body).map_err(|e| SinkError::Response {
            what: what.clone(),
            reason: e.to_string(),
        })?;
        let failures = answer["failures"].as_array().map_or(0, Vec::len);
        if failures > 0 {
            return Err(SinkError::Response {
                what,
                reason: format!(
                    "{failures} documents could not be deleted: {}",
                    error_summary(&answer["failures"][0])
                ),
            });
        }
        answer["deleted"]
            .as_u64()
            .ok_or_else(|| SinkError::Response {
                what,
                reason: format!("no `deleted` count in {}", excerpt(&body)),
            })
    }
}
