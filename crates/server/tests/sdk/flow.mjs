// Drives the official TypeScript SDK (compiled unmodified to JavaScript by the test) against
// a running server and prints what it saw as one JSON object.
const { ConvertriloClient } = await import(process.env.SDK_MODULE);
const client = new ConvertriloClient({ baseUrl: process.env.BASE_URL, apiKey: process.env.API_KEY });
const out = {};
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const job = await client.createJob({
  codec: "h264",
  resolution: "480p",
  fps: 30,
  sourceUrl: process.env.SOURCE_URL,
  originalFilename: "bigbuckbunny.mp4",
  externalId: "sdk-test-1",
  metadata: { customer: "c-42" },
});
out.created = job;
out.probe = await client.probeDuration(job.jobId);
out.approve = await client.approveUnified(job.jobId, { resolution: "480p", container: "mkv" });
out.confirm = await client.confirmJob(job.jobId);
let status;
for (let i = 0; i < 900; i++) {
  status = await client.jobStatus(job.jobId);
  if (["success", "failed", "canceled"].includes(status.status)) break;
  await sleep(200);
}
out.final = status;
if (status.downloadUrl) {
  const res = await fetch(status.downloadUrl);
  out.download = { status: res.status, type: res.headers.get("content-type"), bytes: (await res.arrayBuffer()).byteLength };
}

const other = await client.createJob({ codec: "av1", resolution: "720p", fps: 24 });
out.uploadUrl = other.upload && other.upload.url;
out.cancel = await client.cancelJob(other.jobId);
out.canceled = await client.jobStatus(other.jobId);
try {
  await client.jobStatus("01900000-0000-7000-8000-000000000000");
  out.missing = "no error";
} catch (e) {
  out.missing = String(e.message);
}

// Bulk: create (one bad item), look up, confirm.
out.bulk = await client.createJobsBulk({
  jobs: [
    { codec: "h264", resolution: "480p", fps: 30, externalId: "bulk-1" },
    { codec: "h264", resolution: "480p", fps: 30, sourceUrl: process.env.SOURCE_URL, externalId: "bulk-2" },
    { codec: "h264", resolution: "999p", fps: 30 },
  ],
  settings: { container: "mov" },
});
const bulkIds = out.bulk.jobs.filter((j) => j.jobId).map((j) => j.jobId);
out.bulkStatus = await client.bulkStatus([...bulkIds, "01900000-0000-7000-8000-000000000000"]);
out.bulkConfirm = await client.bulkConfirm({ jobIds: bulkIds, settings: { quality: "good" } });

// On demand: encode and wait through the SDK's own helper, then a cancel.
out.onDemandUrl = await client.onDemandEncodeAndWait(process.env.SOURCE_URL, { resolution: "480p" }, 200, 600);
const od = await client.onDemandEncode({ sourceUrl: process.env.SOURCE_URL, priority: "high", externalId: "od-2" });
out.onDemand = od;
out.onDemandStatus = await client.onDemandStatus(od.jobId);
out.onDemandCancel = await client.onDemandCancel(od.jobId);

// Folder ingest from an S3-compatible bucket, then a folder with no video.
const s3 = (prefix) => ({
  bucket: "sdk", prefix, endpoint: process.env.S3_ENDPOINT, region: "us-east-1",
  accessKeyId: process.env.S3_ACCESS_KEY, secretAccessKey: process.env.S3_SECRET_KEY, forcePathStyle: true,
});
out.folder = await client.onDemandIngestFolder({
  externalIdPrefix: "sdk-folder", sourceS3: s3("in/"), resolution: "480p", maxFiles: 1,
});
try {
  await client.onDemandIngestFolder({ sourceS3: s3("nothing/") });
  out.emptyFolder = "no error";
} catch (e) {
  out.emptyFolder = String(e.message);
}
console.log(JSON.stringify(out));
