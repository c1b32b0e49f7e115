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
console.log(JSON.stringify(out));
