//! Deleting the documents of a rewritten blob (`on_rewrite = "replace"`): a refresh of the
//! indices it may have written to, then `_delete_by_query` on the fields naming it.
use elasticsearch::http::Method;
use serde_json::{Value, json};

use super::setup::status_error;
use super::{BulkSink, SinkError, error_summary, excerpt};

impl BulkSink {
    /// Deletes every document indexed from one blob (named `blob` in messages) from the
    /// indices matching `indices`, for a blob rewritten with other content: the documents
    /// where any `(field, value)` of `names` matches (its blob id, and its path, which
    /// documents of earlier releases carry instead). Refreshes those indices first, so that
    /// documents indexed moments ago are found too, and waits for the deletion. Returns how
    /// many documents were deleted.
    pub async fn delete_blob_documents(
        &self,
        indices: &str,
        blob: &str,
        names: &[(&str, &str)],
    ) -> Result<u64, SinkError> {
        let what = format!("deleting the documents of rewritten blob {blob} from {indices}");
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
        let any_name: Vec<Value> = names
            .iter()
            .map(|(field, value)| json!({"term": {*field: value}}))
            .collect();
        let query = json!({"query": {"bool": {"should": any_name, "minimum_should_match": 1}}});
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
