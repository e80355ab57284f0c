#!/usr/bin/env node
// Sends one push with npm `web-push`, unmodified, for pushlog's integration
// tests. The test sets NODE_PATH to the installed web-push
// (deploy/clients/install.sh npm) and NODE_EXTRA_CA_CERTS to its test CA.
//
// stdin: one JSON job
//   { "subscription": {endpoint, keys: {p256dh, auth}},
//     "payload": "<standard base64 of the exact bytes to send>",
//     "vapid": {"subject", "publicKey", "privateKey"},   (base64url raw keys)
//     "encoding": "aes128gcm" | "aesgcm",                (omitted: the library's default)
//     "ttl": N, "topic": "…", "urgency": "…",            (omitted: the library's defaults)
//     "untilStatus": 410, "timeoutMs": 20000 }           (optional: resend until that status)
// stdout: one JSON result
//   { "status": 201, "headers": {…}, "body": "…", "attempts": 1 }
// Exits 1 (with {"error": …}) when no HTTP answer came at all.
"use strict";

const webpush = require("web-push");

function readStdin() {
  return new Promise((resolve, reject) => {
    const chunks = [];
    process.stdin.on("data", (c) => chunks.push(c));
    process.stdin.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
    process.stdin.on("error", reject);
  });
}

// sendOnce returns the HTTP answer whatever its status: web-push rejects
// non-2xx answers with a WebPushError that carries it.
async function sendOnce(job) {
  const options = {
    vapidDetails: {
      subject: job.vapid.subject,
      publicKey: job.vapid.publicKey,
      privateKey: job.vapid.privateKey,
    },
  };
  if (job.encoding) options.contentEncoding = job.encoding;
  if (job.ttl !== undefined && job.ttl !== null) options.TTL = job.ttl;
  if (job.topic) options.topic = job.topic;
  if (job.urgency) options.urgency = job.urgency;
  const payload = Buffer.from(job.payload || "", "base64");
  try {
    const r = await webpush.sendNotification(job.subscription, payload.length ? payload : null, options);
    return { status: r.statusCode, headers: r.headers, body: r.body };
  } catch (e) {
    if (e && typeof e.statusCode === "number") {
      return { status: e.statusCode, headers: e.headers, body: e.body };
    }
    throw e;
  }
}

async function main() {
  const job = JSON.parse(await readStdin());
  const deadline = Date.now() + (job.timeoutMs || 0);
  let result;
  let attempts = 0;
  for (;;) {
    attempts++;
    result = await sendOnce(job);
    if (!job.untilStatus || result.status === job.untilStatus || Date.now() >= deadline) {
      break;
    }
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
  result.attempts = attempts;
  process.stdout.write(JSON.stringify(result) + "\n");
}

main().catch((e) => {
  process.stdout.write(JSON.stringify({ error: String(e && e.stack ? e.stack : e) }) + "\n");
  process.exit(1);
});
