// The test page (integration/firefox_test.go serves it on loopback).
//
// 1. registers sw.js and waits until it is active;
// 2. retries pushManager.getSubscription() until Firefox's push service
//    answers (calls made before its WebSocket is up never resolve);
// 3. subscribes with the applicationServerKey from ?key= when there is no
//    subscription yet, and POSTs subscription.toJSON() to /ff/subscription;
// 4. long-polls /ff/command for commands from the test ("unsubscribe",
//    "subscription") and POSTs each outcome to /ff/result.
//
// Everything noteworthy goes to /ff/log, which the test prints on failure.
"use strict";

const params = new URLSearchParams(location.search);

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function withTimeout(promise, ms, what) {
  return Promise.race([
    promise,
    sleep(ms).then(() => {
      throw new Error(what + ": no answer after " + ms + " ms");
    }),
  ]);
}

async function post(path, value) {
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
      // the test server is on loopback: a failure is a blip, retry
    }
    await sleep(200);
  }
}

function log(msg) {
  return post("/ff/log", { from: "page", msg: String(msg) });
}

function base64urlToBytes(s) {
  s = s.replace(/-/g, "+").replace(/_/g, "/").replace(/=+$/, "");
  const bin = atob(s + "===".slice((s.length + 3) % 4));
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) {
    out[i] = bin.charCodeAt(i);
  }
  return out;
}

// pushReady retries getSubscription() until the push service answers.
async function pushReady(reg) {
  for (let attempt = 1; ; attempt++) {
    try {
      return await withTimeout(reg.pushManager.getSubscription(), 2000, "getSubscription");
    } catch (e) {
      if (attempt % 5 === 1) {
        await log("waiting for the push service: " + e);
      }
      await sleep(250);
    }
  }
}

async function subscribe(reg) {
  const key = params.get("key");
  const options = { userVisibleOnly: true };
  if (key) {
    options.applicationServerKey = base64urlToBytes(key);
  }
  for (let attempt = 1; ; attempt++) {
    try {
      return await withTimeout(reg.pushManager.subscribe(options), 15000, "subscribe");
    } catch (e) {
      await log("subscribe attempt " + attempt + " failed: " + e);
      if (attempt >= 5) {
        throw e;
      }
      await sleep(1000);
    }
  }
}

async function reportSubscription(reg) {
  let sub = await pushReady(reg);
  const existing = sub !== null;
  if (!sub) {
    sub = await subscribe(reg);
  }
  await post("/ff/subscription", { existing, subscription: sub.toJSON() });
  return sub;
}

async function run(reg, cmd) {
  switch (cmd.op) {
    case "unsubscribe": {
      const sub = await withTimeout(reg.pushManager.getSubscription(), 10000, "getSubscription");
      if (!sub) {
        return { ok: false, error: "no subscription to unsubscribe" };
      }
      const ok = await withTimeout(sub.unsubscribe(), 15000, "unsubscribe");
      return { ok };
    }
    case "subscription": {
      const sub = await withTimeout(reg.pushManager.getSubscription(), 10000, "getSubscription");
      return { ok: true, subscription: sub ? sub.toJSON() : null };
    }
    default:
      return { ok: false, error: "unknown command " + cmd.op };
  }
}

async function commands(reg) {
  for (;;) {
    let cmd;
    try {
      const r = await fetch("/ff/command");
      if (r.status === 204) {
        continue; // long poll ended without a command
      }
      cmd = await r.json();
    } catch (e) {
      await sleep(500);
      continue;
    }
    let result;
    try {
      result = await run(reg, cmd);
    } catch (e) {
      result = { ok: false, error: String(e) };
    }
    result.id = cmd.id;
    await post("/ff/result", result);
  }
}

async function main() {
  const reg = await navigator.serviceWorker.register("sw.js", { scope: "./" });
  await navigator.serviceWorker.ready;
  await log("service worker ready");
  await reportSubscription(reg);
  await commands(reg);
}

main().catch((e) => log("page failed: " + e + (e && e.stack ? "\n" + e.stack : "")));
