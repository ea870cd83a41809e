//! Deliveries into an S3 bucket (AWS, or any S3-compatible server at `endpoint`) through the
//! `object_store` crate: each target's files under `<prefix><target>/`, the data object first,
//! then the manifest (a reader that lists manifests never finds one whose data is missing; an
//! object is visible only once its upload completed: a single PUT, or a multipart upload that
//! is completed, or aborted on failure), then retention (`file::expired`, the same rule as a
//! directory's).
//!
//! The client is built per round with the credentials read then (a rotated secret is picked
//! up). It must never put a credential in a log, an error or an object name.

use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{
    ClientOptions, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig, WriteMultipart,
};
use sluice_config::S3Destination;

use super::deliver::{Delivered, DeliveryError, Prepared, Stage};
use super::file;

/// Objects up to this size are one PUT; larger ones a multipart upload in parts of this size
/// (S3's parts are at least 5 MiB).
const PART: usize = 16 << 20;

/// One request's bound (a part of [`PART`] bytes included); object_store retries a failed
/// request twice within [`RETRY_TIMEOUT`], and the delivery's own backoff retries the rest.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
const RETRY_TIMEOUT: Duration = Duration::from_secs(30);

/// A bucket ready for one round's deliveries.
#[derive(Clone)]
pub struct Bucket {
    store: Arc<dyn ObjectStore>,
    /// `s3://bucket/prefix` for logs and errors.
    describe: String,
    bucket: String,
    prefix: String,
}

impl Bucket {
    /// A client for `destination`, its credentials read now.
    pub fn open(destination: &S3Destination) -> Result<Bucket, DeliveryError> {
        let describe = destination.describe();
        let mut builder = match &destination.credentials {
            // The AWS environment: AWS_* variables, web identity, container or instance
            // credentials, as the AWS SDKs find them.
            None => AmazonS3Builder::from_env(),
            Some(credentials) => {
                let secret = |reference: &sluice_config::SecretRef| {
                    reference
                        .resolve()
                        .map_err(|e| DeliveryError::new(Stage::CreateDir, &describe, e))
                };
                let mut builder = AmazonS3Builder::new()
                    .with_access_key_id(secret(&credentials.access_key_id)?.expose())
                    .with_secret_access_key(secret(&credentials.secret_access_key)?.expose());
                if let Some(token) = &credentials.session_token {
                    builder = builder.with_token(secret(token)?.expose());
                }
                builder
            }
        };
        builder = builder
            .with_bucket_name(&destination.bucket)
            .with_region(&destination.region)
            .with_client_options(
                ClientOptions::new()
                    .with_timeout(REQUEST_TIMEOUT)
                    .with_connect_timeout(Duration::from_secs(10)),
            )
            .with_retry(RetryConfig {
                max_retries: 2,
                retry_timeout: RETRY_TIMEOUT,
                ..RetryConfig::default()
            });
        if let Some(endpoint) = &destination.endpoint {
            builder = builder
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"))
                .with_virtual_hosted_style_request(false);
        }
        let store = builder
            .build()
            .map_err(|e| DeliveryError::new(Stage::CreateDir, &describe, e))?;
        Ok(Bucket {
            store: Arc::new(store),
            describe,
            bucket: destination.bucket.clone(),
            prefix: destination.prefix.clone(),
        })
    }

    fn path(&self, target: &str, name: &str) -> Result<ObjectPath, DeliveryError> {
        let key = format!("{}{target}/{name}", self.prefix);
        ObjectPath::parse(&key).map_err(|e| DeliveryError::new(Stage::CreateDir, self.url(&key), e))
    }

    fn url(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.bucket)
    }

    /// Writes `prepared` (data, then manifest) and keeps the newest `keep` of its target.
    /// Retention problems are logged, not failures.
    pub async fn write(
        &self,
        prepared: &Prepared,
        keep: usize,
    ) -> Result<Delivered, DeliveryError> {
        let data = self.path(&prepared.target, &prepared.data_name)?;
        let manifest = self.path(&prepared.target, &prepared.manifest_name)?;
        self.upload(&data, prepared.data.clone())
            .await
            .map_err(|e| DeliveryError::new(Stage::Data, self.url(data.as_ref()), concise(&e)))?;
        self.upload(&manifest, prepared.manifest.clone())
            .await
            .map_err(|e| {
                DeliveryError::new(Stage::Manifest, self.url(manifest.as_ref()), concise(&e))
            })?;
        let deleted = match self.retain(&prepared.target, keep).await {
            Ok(deleted) => deleted,
            Err(error) => {
                let error = concise(&error);
                tracing::warn!(target_id = %prepared.target, bucket = %self.describe, %error, "delivery retention failed; the next delivery tries again");
                0
            }
        };
        Ok(Delivered {
            data: self.url(data.as_ref()),
            manifest: self.url(manifest.as_ref()),
            bytes: prepared.bytes(),
            deleted,
        })
    }

    async fn upload(&self, path: &ObjectPath, bytes: bytes::Bytes) -> object_store::Result<()> {
        upload(&*self.store, path, bytes).await
    }

    /// Retention over the target's objects; returns the deliveries deleted.
    async fn retain(&self, target: &str, keep: usize) -> object_store::Result<usize> {
        let dir = ObjectPath::parse(format!("{}{target}", self.prefix))?;
        let names: Vec<String> = self
            .store
            .list(Some(&dir))
            .map_ok(|meta| meta.location.filename().unwrap_or_default().to_owned())
            .try_collect()
            .await?;
        let expired = file::expired(names, keep);
        for name in &expired.names {
            self.store.delete(&dir.clone().join(name.as_str())).await?;
        }
        Ok(expired.deliveries)
    }
}

/// One object, whole or not at all.
async fn upload(
    store: &dyn ObjectStore,
    path: &ObjectPath,
    bytes: bytes::Bytes,
) -> object_store::Result<()> {
    if bytes.len() <= PART {
        store.put(path, PutPayload::from(bytes)).await?;
        return Ok(());
    }
    let upload = store.put_multipart(path).await?;
    let mut parts = WriteMultipart::new_with_chunk_size(upload, PART);
    parts.put(bytes);
    // Aborts the upload when a part or the completion fails.
    parts.finish().await?;
    Ok(())
}

/// An object store error as one line: the server's S3 error code and message when its answer
/// has them (`NoSuchBucket: The specified bucket does not exist`), else the error's text cut
/// to 300 characters (the client's own errors: a refused connection, a timeout).
fn concise(error: &object_store::Error) -> String {
    let text = error.to_string();
    let tag = |name: &str| {
        let open = format!("<{name}>");
        let close = format!("</{name}>");
        let rest = text.split_once(open.as_str())?.1;
        Some(rest.split_once(close.as_str())?.0.to_owned())
    };
    match (tag("Code"), tag("Message")) {
        (Some(code), Some(message)) => format!("the server answered {code}: {message}"),
        (Some(code), None) => format!("the server answered {code}"),
        _ => text.chars().take(300).collect(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[tokio::test]
    async fn an_object_larger_than_a_part_is_uploaded_in_parts_and_reads_back_whole() {
        let store = object_store::memory::InMemory::new();
        let bytes: bytes::Bytes = (0..PART * 2 + 12_345)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<u8>>()
            .into();
        let path = ObjectPath::from("p/t/x.parquet");
        upload(&store, &path, bytes.clone()).await.unwrap();
        let read = store.get(&path).await.unwrap().bytes().await.unwrap();
        assert!(read == bytes, "the object reads back whole");
        let small = bytes.slice(..100);
        upload(&store, &path, small.clone()).await.unwrap();
        assert_eq!(
            store.get(&path).await.unwrap().bytes().await.unwrap(),
            small
        );
    }

    #[test]
    fn an_s3_error_answer_is_cut_to_its_code_and_message() {
        let error = object_store::Error::Generic {
            store: "S3",
            source: "Error performing PUT http://h/b/k in 6ms - Server returned non-2xx status \
                     code: 404 Not Found: <?xml version=\"1.0\"?><Error><Code>NoSuchBucket</Code>\
                     <Message>The specified bucket does not exist</Message><RequestId>1</RequestId>\
                     </Error>"
                .into(),
        };
        assert_eq!(
            concise(&error),
            "the server answered NoSuchBucket: The specified bucket does not exist"
        );
        let refused = object_store::Error::Generic {
            store: "S3",
            source: "x".repeat(400).into(),
        };
        assert!(concise(&refused).chars().count() <= 300);
    }
}
