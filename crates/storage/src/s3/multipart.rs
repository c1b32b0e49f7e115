//! Multipart uploads: create, send the parts in order (each retried a few times when the
//! failure may pass), complete; abort when it cannot be completed, so no parts are left
//! stored (and billed) in the customer's bucket.

use super::*;

impl S3Client {
    pub(super) async fn put_multipart(
        &self,
        b: &S3Bucket,
        key: &str,
        path: &Path,
        size: u64,
        content_type: &str,
    ) -> Result<PutInfo, S3Error> {
        let url = actions::CreateMultipartUpload::new(&b.bucket, b.credentials.as_ref(), key)
            .sign(REQUEST_TTL);
        let resp = self
            .http
            .post(url)
            .header(header::CONTENT_TYPE, content_type)
            .send()
            .await
            .map_err(network)?;
        if !resp.status().is_success() {
            return Err(service_error(resp).await);
        }
        let text = resp.text().await.map_err(network)?;
        let created = actions::CreateMultipartUpload::parse_response(&text)
            .map_err(|e| S3Error::Protocol(format!("CreateMultipartUpload: {e}")))?;
        let upload_id = created.upload_id().to_string();
        match self.send_parts(b, key, path, size, &upload_id).await {
            Ok(info) => Ok(info),
            Err(e) => {
                let url = actions::AbortMultipartUpload::new(
                    &b.bucket,
                    b.credentials.as_ref(),
                    key,
                    &upload_id,
                )
                .sign(REQUEST_TTL);
                if let Err(abort) = self.http.delete(url).send().await {
                    tracing::warn!(error = %network(abort), "could not abort a multipart upload");
                }
                Err(e)
            }
        }
    }

    async fn send_parts(
        &self,
        b: &S3Bucket,
        key: &str,
        path: &Path,
        size: u64,
        upload_id: &str,
    ) -> Result<PutInfo, S3Error> {
        let count = size.div_ceil(self.part_size);
        if count > 10_000 {
            return Err(S3Error::Invalid(format!(
                "the file needs {count} parts of {} bytes; S3 allows 10000, so raise the part size",
                self.part_size
            )));
        }
        let mut etags = Vec::with_capacity(count as usize);
        for index in 0..count {
            let offset = index * self.part_size;
            let len = self.part_size.min(size - offset);
            let number =
                u16::try_from(index + 1).map_err(|_| S3Error::Invalid("too many parts".into()))?;
            let mut attempt = 0;
            let tag = loop {
                attempt += 1;
                match self
                    .send_part(b, key, path, upload_id, number, offset, len)
                    .await
                {
                    Ok(tag) => break tag,
                    Err(e) if e.is_transient() && attempt < PART_ATTEMPTS => {
                        tracing::info!(part = number, error = %e, "retrying an upload part");
                        tokio::time::sleep(Duration::from_millis(500 * u64::from(attempt))).await;
                    }
                    Err(e) => return Err(e),
                }
            };
            etags.push(tag);
        }
        let action = actions::CompleteMultipartUpload::new(
            &b.bucket,
            b.credentials.as_ref(),
            key,
            upload_id,
            etags.iter().map(String::as_str),
        );
        let url = action.sign(REQUEST_TTL);
        let resp = self
            .http
            .post(url)
            .body(action.body())
            .send()
            .await
            .map_err(network)?;
        if !resp.status().is_success() {
            return Err(service_error(resp).await);
        }
        // S3 may answer 200 and still report an error in the body of a completion.
        let text = resp.text().await.map_err(network)?;
        if text.contains("<Error>") {
            return Err(S3Error::Service {
                status: 200,
                code: xml_tag(&text, "Code").unwrap_or_else(|| "InternalError".into()),
                message: xml_tag(&text, "Message").unwrap_or_default(),
            });
        }
        Ok(PutInfo {
            size,
            etag: xml_tag(&text, "ETag").map(|t| t.replace("&quot;", "\"")),
            parts: etags.len(),
        })
    }

    #[allow(clippy::too_many_arguments)]
    async fn send_part(
        &self,
        b: &S3Bucket,
        key: &str,
        path: &Path,
        upload_id: &str,
        number: u16,
        offset: u64,
        len: u64,
    ) -> Result<String, S3Error> {
        let url =
            actions::UploadPart::new(&b.bucket, b.credentials.as_ref(), key, number, upload_id)
                .sign(REQUEST_TTL);
        let resp = self
            .http
            .put(url)
            .header(header::CONTENT_LENGTH, len)
            .body(file_body(path, offset, len).await?)
            .send()
            .await
            .map_err(network)?;
        if !resp.status().is_success() {
            return Err(service_error(resp).await);
        }
        etag(resp.headers())
            .ok_or_else(|| S3Error::Protocol("UploadPart answer without ETag".into()))
    }
}
