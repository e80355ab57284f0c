// The test page's service worker: reports every push event's data, as the
// exact decrypted bytes (base64) and as event.data.text(), to the test server.
"use strict";

self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));

function bytesToBase64(buf) {
  const bytes = new Uint8Array(buf);
  let bin = "";
  for (let i = 0; i < bytes.length; i++) {
    bin += String.fromCharCode(bytes[i]);
  }
  return btoa(bin);
}

async function report(path, value) {
  for (let i = 0; i < 5; i++) {
    try {
      const r = await fetch(path, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(value),
      });
      if (r.ok) {
        return;
      }
    } catch (e) {
      // retried: the test server is on loopback
    }
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

self.addEventListener("push", (event) => {
  const msg = { hasData: event.data !== null };
  if (event.data) {
    msg.base64 = bytesToBase64(event.data.arrayBuffer());
    msg.text = event.data.text();
  }
  event.waitUntil(report("/ff/push", msg));
});

self.addEventListener("pushsubscriptionchange", (event) => {
  event.waitUntil(report("/ff/log", { from: "sw", msg: "pushsubscriptionchange" }));
});
